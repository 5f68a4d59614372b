//! The star schema described as data: tables, their columns and logical types.
//!
//! This module knows nothing about DataFrames; the typed rows in [`crate::rows`] derive their column list
//! from their Rust field types, so the schema has a single source of truth. The `polars` feature maps
//! [`ColumnType`] to polars data types (see [`crate::warehouse`]).

use std::fmt;

/// Logical type of one column, independent of any DataFrame library.
///
/// Timestamps are UTC instants stored with millisecond precision; dates are calendar dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// UTF-8 text.
    Text,
    /// true / false.
    Bool,
    /// Signed 32-bit integer (slot counts, capacities).
    Int32,
    /// Signed 64-bit integer (money in cents).
    Int64,
    /// Unsigned 64-bit integer (sensor sequence numbers).
    UInt64,
    /// 64-bit float (coordinates).
    Float64,
    /// Calendar date.
    Date,
    /// UTC instant, millisecond precision.
    Timestamp,
}

impl fmt::Display for ColumnType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ColumnType::Text => "text",
            ColumnType::Bool => "bool",
            ColumnType::Int32 => "int32",
            ColumnType::Int64 => "int64",
            ColumnType::UInt64 => "uint64",
            ColumnType::Float64 => "float64",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp[ms, UTC]",
        };
        formatter.write_str(name)
    }
}

/// One column of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnSpec {
    /// Column name, as in Parquet and in polars.
    pub name: &'static str,
    /// Logical type.
    pub column_type: ColumnType,
    /// Whether the column may hold nulls.
    pub nullable: bool,
    /// What the column means (from the row type's field docs).
    pub doc: &'static str,
    /// The warehouse format version that added the column to its table: 1 for the original columns.
    /// Files written before that version lack the column, and readers take it as null, so a column
    /// added later is always nullable.
    pub added_in_format: u32,
}

/// Every table of the warehouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Table {
    /// One sensor reading: a status change or a heartbeat.
    FactSlotStatus,
    /// One stay of a vehicle in a slot, entry to exit.
    FactParkingSession,
    /// A barcode / app scan at a gate.
    FactCustomerScan,
    /// A parking slip: amount, penalty, tariff.
    FactPayment,
    /// Occupied slots of one lot at one instant (derived from slot facts or imported from counters).
    FactLotOccupancy,
    /// Parking lots (garages, street blocks).
    DimLot,
    /// Zones grouping lots (a district, a city).
    DimZone,
    /// Individual slots (bays).
    DimSlot,
    /// Customers; contact data only as keyed hashes.
    DimCustomer,
    /// Vehicles; plates only as keyed hashes.
    DimVehicle,
    /// Calendar: one row per date and holiday region.
    DimCalendar,
    /// Special events that move demand at one lot (matches, concerts).
    DimEvent,
}

impl Table {
    /// Every table, facts first.
    pub const ALL: [Table; 12] = [
        Table::FactSlotStatus,
        Table::FactParkingSession,
        Table::FactCustomerScan,
        Table::FactPayment,
        Table::FactLotOccupancy,
        Table::DimLot,
        Table::DimZone,
        Table::DimSlot,
        Table::DimCustomer,
        Table::DimVehicle,
        Table::DimCalendar,
        Table::DimEvent,
    ];

    /// The table's name: its folder under the warehouse root.
    pub fn name(self) -> &'static str {
        match self {
            Table::FactSlotStatus => "fact_slot_status",
            Table::FactParkingSession => "fact_parking_session",
            Table::FactCustomerScan => "fact_customer_scan",
            Table::FactPayment => "fact_payment",
            Table::FactLotOccupancy => "fact_lot_occupancy",
            Table::DimLot => "dim_lot",
            Table::DimZone => "dim_zone",
            Table::DimSlot => "dim_slot",
            Table::DimCustomer => "dim_customer",
            Table::DimVehicle => "dim_vehicle",
            Table::DimCalendar => "dim_calendar",
            Table::DimEvent => "dim_event",
        }
    }

    /// Looks a table up by its name.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|table| table.name() == name)
    }

    /// The columns of the table, in file order.
    pub fn columns(self) -> &'static [ColumnSpec] {
        use crate::rows::*;
        match self {
            Table::FactSlotStatus => SlotStatusRow::COLUMNS,
            Table::FactParkingSession => ParkingSessionRow::COLUMNS,
            Table::FactCustomerScan => CustomerScanRow::COLUMNS,
            Table::FactPayment => PaymentRow::COLUMNS,
            Table::FactLotOccupancy => LotOccupancyRow::COLUMNS,
            Table::DimLot => LotRow::COLUMNS,
            Table::DimZone => ZoneRow::COLUMNS,
            Table::DimSlot => SlotRow::COLUMNS,
            Table::DimCustomer => CustomerRow::COLUMNS,
            Table::DimVehicle => VehicleRow::COLUMNS,
            Table::DimCalendar => CalendarRow::COLUMNS,
            Table::DimEvent => EventRow::COLUMNS,
        }
    }

    /// The timestamp column whose UTC date names the table's hive partition (`date=YYYY-MM-DD`), or
    /// `None` for dimensions, which are small and kept unpartitioned.
    pub fn partition_column(self) -> Option<&'static str> {
        use crate::rows::*;
        match self {
            Table::FactSlotStatus => SlotStatusRow::PARTITION_COLUMN,
            Table::FactParkingSession => ParkingSessionRow::PARTITION_COLUMN,
            Table::FactCustomerScan => CustomerScanRow::PARTITION_COLUMN,
            Table::FactPayment => PaymentRow::PARTITION_COLUMN,
            Table::FactLotOccupancy => LotOccupancyRow::PARTITION_COLUMN,
            _ => None,
        }
    }

    /// Whether this is a fact table.
    pub fn is_fact(self) -> bool {
        self.partition_column().is_some()
    }
}

impl fmt::Display for Table {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A Rust type that can be stored in one column.
pub trait ColumnValue {
    /// The logical column type.
    const COLUMN_TYPE: ColumnType;
    /// Whether the type admits a missing value (`Option<T>`).
    const NULLABLE: bool;
}

macro_rules! column_value {
    ($($rust:ty => $column:ident),+ $(,)?) => {
        $(
            impl ColumnValue for $rust {
                const COLUMN_TYPE: ColumnType = ColumnType::$column;
                const NULLABLE: bool = false;
            }
            impl ColumnValue for Option<$rust> {
                const COLUMN_TYPE: ColumnType = ColumnType::$column;
                const NULLABLE: bool = true;
            }
        )+
    };
}

column_value! {
    String => Text,
    bool => Bool,
    i32 => Int32,
    i64 => Int64,
    u64 => UInt64,
    f64 => Float64,
    chrono::NaiveDate => Date,
    chrono::DateTime<chrono::Utc> => Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_found_by_its_name() {
        for table in Table::ALL {
            assert_eq!(Table::from_name(table.name()), Some(table));
        }
        assert_eq!(Table::from_name("fact_nothing"), None);
    }

    #[test]
    fn facts_are_partitioned_by_a_timestamp_column() {
        for table in Table::ALL {
            let Some(partition) = table.partition_column() else {
                continue;
            };
            let column = table
                .columns()
                .iter()
                .find(|column| column.name == partition)
                .expect("partition column should be a column of the table");
            assert_eq!(column.column_type, ColumnType::Timestamp, "{table}");
            assert!(
                !column.nullable,
                "{table}: partition column must not be null"
            );
        }
    }

    #[test]
    fn column_names_are_unique_and_documented() {
        for table in Table::ALL {
            let mut names: Vec<_> = table.columns().iter().map(|column| column.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), table.columns().len(), "{table}");
            for column in table.columns() {
                assert!(!column.doc.is_empty(), "{table}.{} has no doc", column.name);
            }
        }
    }

    #[test]
    fn columns_added_after_the_first_format_are_nullable_and_last() {
        for table in Table::ALL {
            let mut previous = 1;
            for column in table.columns() {
                assert!(column.added_in_format >= 1, "{table}.{}", column.name);
                if column.added_in_format > 1 {
                    assert!(column.nullable, "{table}.{} must be nullable", column.name);
                }
                assert!(
                    column.added_in_format >= previous,
                    "{table}.{}: later columns go after the older ones",
                    column.name
                );
                previous = column.added_in_format;
            }
        }
        let added: Vec<&str> = Table::DimCalendar
            .columns()
            .iter()
            .filter(|column| column.added_in_format == 2)
            .map(|column| column.name)
            .collect();
        assert_eq!(
            added,
            [
                "is_school_holiday",
                "school_holiday_name",
                "is_bridge_day",
                "days_to_major_holiday",
                "days_from_major_holiday"
            ]
        );
    }
}
