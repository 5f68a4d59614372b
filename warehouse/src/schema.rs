//! The star schema described as data: tables, their columns and logical types.
//!
//! This module knows nothing about DataFrames or rows; the typed rows in [`crate::rows`] derive their
//! column list from their Rust field types (and say which table has which columns), so the schema has
//! a single source of truth. [`crate::frame`] maps [`ColumnType`] to polars data types.

use std::fmt;

use chrono::NaiveDate;

/// The warehouse format this code writes; readers accept this version and older ones (see
/// [`crate::store`] for what each version changed).
pub const FORMAT_VERSION: u32 = 4;

/// The file that marks a folder as a warehouse and records its format version.
pub const MANIFEST_FILE: &str = "warehouse.json";

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
    /// Tariffs per zone or lot and time band, with their validity (from the operational store).
    DimTariff,
}

impl Table {
    /// Every table, facts first.
    pub const ALL: [Table; 13] = [
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
        Table::DimTariff,
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
            Table::DimTariff => "dim_tariff",
        }
    }

    /// Looks a table up by its name.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|table| table.name() == name)
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

/// A row type of one warehouse table.
pub trait TableRow: Sized + Clone + Send + Sync + 'static {
    /// The table the row belongs to.
    const TABLE: Table;
    /// The columns, in file order.
    const COLUMNS: &'static [ColumnSpec];
    /// The timestamp column whose UTC date is the hive partition, for fact tables.
    const PARTITION_COLUMN: Option<&'static str>;
    /// The UTC date of the partition this row belongs to, for fact tables.
    fn partition_date(&self) -> Option<NaiveDate>;
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
}
