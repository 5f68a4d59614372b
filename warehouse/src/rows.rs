//! Typed rows of every star-schema table.
//!
//! Each struct is one row; its fields are the table's columns in file order, and the field docs are the
//! column docs. The [`star_table!`] macro derives [`TableRow`] (the column list, the partition date) and
//! the conversions to and from a polars `DataFrame` ([`crate::frame::FrameRow`]); [`Table::columns`]
//! names each table's row type.
//!
//! A column added to a table after the warehouse's first format carries `#[added_in_format = N]`
//! ([`crate::schema::ColumnSpec::added_in_format`]); it must be an `Option`, and files written
//! before format `N`, which lack it, read it as null.
//!
//! Identifiers are text: real sources name lots and bays their own way (`BHMBCCMKT01`, `poi1`, `567`);
//! each source prefixes its ids (`bhm:`, `mlg:`, `mel:`, `sim:`) so that imports never collide.

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use parkcast_features::calendar::{HolidayCalendar, is_weekend};

use crate::schema::{ColumnSpec, ColumnValue, Table, TableRow};

macro_rules! star_table {
    (
        $(#[$meta:meta])*
        $row:ident => $table:ident, partition: $partition:tt,
        { $( $(#[doc = $doc:literal])+ $(#[added_in_format = $added:literal])? $field:ident : $ty:ty ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct $row {
            $( $(#[doc = $doc])+ pub $field: $ty, )+
        }

        impl TableRow for $row {
            const TABLE: Table = Table::$table;
            const COLUMNS: &'static [ColumnSpec] = &[
                $(
                    ColumnSpec {
                        name: stringify!($field),
                        column_type: <$ty as ColumnValue>::COLUMN_TYPE,
                        nullable: <$ty as ColumnValue>::NULLABLE,
                        doc: concat!($($doc),+),
                        added_in_format: star_table!(@added $($added)?),
                    },
                )+
            ];
            const PARTITION_COLUMN: Option<&'static str> = star_table!(@partition_name $partition);

            fn partition_date(&self) -> Option<NaiveDate> {
                star_table!(@partition_date self, $partition)
            }
        }

        impl crate::frame::FrameRow for $row {
            fn to_frame(rows: &[Self]) -> polars::prelude::PolarsResult<polars::prelude::DataFrame> {
                use crate::frame::PolarsValue;
                let height = rows.len();
                let columns = vec![
                    $( <$ty as PolarsValue>::to_column(stringify!($field), rows.iter().map(|row| &row.$field)), )+
                ];
                polars::prelude::DataFrame::new(height, columns)
            }

            fn from_frame(
                frame: &polars::prelude::DataFrame,
            ) -> Result<Vec<Self>, crate::error::WarehouseError> {
                use crate::frame::PolarsValue;
                $(
                    let mut $field = <$ty as PolarsValue>::from_column(
                        Table::$table,
                        stringify!($field),
                        frame.column(stringify!($field)).map_err(|source| {
                            crate::error::WarehouseError::Polars {
                                context: format!("reading column {} of {}", stringify!($field), Table::$table),
                                source,
                            }
                        })?,
                    )?
                    .into_iter();
                )+
                let mut rows = Vec::with_capacity(frame.height());
                for _ in 0..frame.height() {
                    rows.push($row {
                        $( $field: $field.next().expect("every column should have one value per row"), )+
                    });
                }
                Ok(rows)
            }
        }
    };
    (@added) => { 1 };
    (@added $added:literal) => { $added };
    (@partition_name none) => { None };
    (@partition_name $field:ident) => { Some(stringify!($field)) };
    (@partition_date $self:ident, none) => { None };
    (@partition_date $self:ident, $field:ident) => { Some($self.$field.date_naive()) };
}

star_table! {
    /// One sensor reading of one slot: a status change, or a heartbeat repeating the current status.
    SlotStatusRow => FactSlotStatus, partition: ts,
    {
        /// Event time: when the sensor measured (UTC, ms).
        ts: DateTime<Utc>,
        /// When the reading reached the backend (UTC, ms); later than `ts` for late readings.
        received_ts: DateTime<Utc>,
        /// The slot the sensor watches.
        slot_id: String,
        /// The lot the slot belongs to.
        lot_id: String,
        /// Whether the sensor saw a vehicle.
        occupied: bool,
        /// `change` for a status change, `heartbeat` for a periodic repeat of the current status.
        kind: String,
        /// Per-sensor sequence number, increasing with each reading the sensor sends.
        sensor_seq: u64,
        /// Where the row came from: `simulated`, `melbourne`, `kafka`, ...
        source: String,
    }
}

star_table! {
    /// One stay of a vehicle in a slot.
    ParkingSessionRow => FactParkingSession, partition: entry_ts,
    {
        /// Unique id of the stay.
        session_id: String,
        /// The slot used.
        slot_id: String,
        /// The lot of the slot.
        lot_id: String,
        /// The vehicle, when known (gate systems know it; street sensors do not).
        vehicle_id: Option<String>,
        /// The customer, when known.
        customer_id: Option<String>,
        /// Arrival (UTC, ms).
        entry_ts: DateTime<Utc>,
        /// Departure (UTC, ms); null while the vehicle is still parked at the end of the data.
        exit_ts: Option<DateTime<Utc>>,
        /// Longest stay allowed or paid for, in minutes, when a limit applies.
        allowed_minutes: Option<i32>,
        /// Whether the stay broke the slot's restriction (overstay, no payment).
        in_violation: bool,
        /// Where the row came from.
        source: String,
    }
}

star_table! {
    /// A barcode or app scan at a lot's gate.
    CustomerScanRow => FactCustomerScan, partition: ts,
    {
        /// When the scan happened (UTC, ms).
        ts: DateTime<Utc>,
        /// The customer whose code was scanned.
        customer_id: String,
        /// The vehicle, when the gate reads plates.
        vehicle_id: Option<String>,
        /// The lot.
        lot_id: String,
        /// The gate that scanned.
        gate: String,
        /// `entry` or `exit`.
        direction: String,
        /// The stay the scan opened or closed.
        session_id: Option<String>,
        /// Where the row came from.
        source: String,
    }
}

star_table! {
    /// A parking slip: what a stay cost, with penalties.
    PaymentRow => FactPayment, partition: paid_ts,
    {
        /// Unique slip id.
        slip_id: String,
        /// The stay paid for.
        session_id: String,
        /// The paying customer, when known.
        customer_id: Option<String>,
        /// The lot.
        lot_id: String,
        /// The tariff applied.
        tariff_id: String,
        /// Amount for the stay, in cents of `currency`, penalties excluded.
        amount_cents: i64,
        /// Penalty for an overstay or a missing payment, in cents.
        penalty_cents: i64,
        /// ISO 4217 currency code.
        currency: String,
        /// When the slip was paid (UTC, ms).
        paid_ts: DateTime<Utc>,
        /// Where the row came from.
        source: String,
        /// Where the operational store is the source (`parkcast etl`): `pending`, `settled`,
        /// `failed` or `refunded` for a payment, `issued`, `paid` or `cancelled` for a penalty.
        /// Null for sources that record only settled slips, and in files before format 4.
        #[added_in_format = 4]
        status: Option<String>,
        /// Money given back on this slip, in cents (refunds often come days later and amend the
        /// slip); null where the source has no refunds.
        #[added_in_format = 4]
        refunded_cents: Option<i64>,
        /// Start of the stay paid for (UTC, ms), when the slip says.
        #[added_in_format = 4]
        paid_from: Option<DateTime<Utc>>,
        /// End of the stay paid for (UTC, ms), when the slip says: a stay that ends later overstayed.
        #[added_in_format = 4]
        paid_until: Option<DateTime<Utc>>,
    }
}

star_table! {
    /// Occupied slots of one lot at one instant.
    LotOccupancyRow => FactLotOccupancy, partition: ts,
    {
        /// The lot.
        lot_id: String,
        /// The instant (UTC, ms): an interval boundary when derived, the counter's time when imported.
        ts: DateTime<Utc>,
        /// Occupied slots, within [0, capacity] after cleaning.
        occupied: i32,
        /// Slots whose status is unknown at `ts` (silent or never-seen sensors); 0 for counters.
        unknown: i32,
        /// Capacity at `ts` (capacities change: a garage adds a floor).
        capacity: i32,
        /// Where the row came from: `simulated`, `birmingham`, `malaga`, `melbourne`, `csv`, ...
        source: String,
    }
}

star_table! {
    /// A parking lot: a garage or a block of street bays.
    LotRow => DimLot, partition: none,
    {
        /// Unique lot id.
        lot_id: String,
        /// The zone the lot belongs to.
        zone_id: String,
        /// Human-readable name.
        name: String,
        /// `commuter_garage`, `shopping_centre`, `street_zone`, `nightlife`, `stadium`, `garage`, ...
        kind: String,
        /// Current legal capacity in slots.
        capacity: i32,
        /// WGS84 latitude, when known.
        latitude: Option<f64>,
        /// WGS84 longitude, when known.
        longitude: Option<f64>,
        /// IANA time zone of the lot (local time drives demand).
        timezone: String,
        /// Holiday region, `CC` or `CC-SUB` (ISO 3166), e.g. `GB-ENG`.
        holiday_region: String,
        /// Where the row came from.
        source: String,
        /// For a source that writes only changes: a reading of the lot holds until the next one,
        /// for at most this many minutes (`import csv --fill-forward`), and the trainer's grid
        /// fills forward from it. Null: a reading holds for no time (a sampled source), and in
        /// files written before format 3.
        #[added_in_format = 3]
        hold_minutes: Option<i32>,
    }
}

star_table! {
    /// A zone grouping lots.
    ZoneRow => DimZone, partition: none,
    {
        /// Unique zone id.
        zone_id: String,
        /// Human-readable name.
        name: String,
        /// City.
        city: String,
        /// IANA time zone.
        timezone: String,
        /// Where the row came from.
        source: String,
    }
}

star_table! {
    /// One slot (bay).
    SlotRow => DimSlot, partition: none,
    {
        /// Unique slot id.
        slot_id: String,
        /// The lot.
        lot_id: String,
        /// `standard`, `ev`, `disabled`, `motorcycle`, `loading`.
        slot_type: String,
        /// WGS84 latitude, when known.
        latitude: Option<f64>,
        /// WGS84 longitude, when known.
        longitude: Option<f64>,
        /// Where the row came from.
        source: String,
    }
}

star_table! {
    /// A customer. Contact data is PII: only keyed hashes are stored, never the clear value.
    CustomerRow => DimCustomer, partition: none,
    {
        /// Unique customer id.
        customer_id: String,
        /// HMAC-SHA256 (hex) of the normalised e-mail address.
        email_hash: Option<String>,
        /// HMAC-SHA256 (hex) of the normalised phone number.
        phone_hash: Option<String>,
        /// `subscriber` (season ticket) or `visitor`.
        customer_type: String,
        /// When the customer registered.
        registered_on: NaiveDate,
        /// Where the row came from.
        source: String,
    }
}

star_table! {
    /// A vehicle. The plate is PII: only its keyed hash is stored.
    VehicleRow => DimVehicle, partition: none,
    {
        /// Unique vehicle id.
        vehicle_id: String,
        /// The owner.
        customer_id: Option<String>,
        /// HMAC-SHA256 (hex) of the normalised plate.
        plate_hash: String,
        /// `car`, `ev`, `van`, `motorcycle`.
        vehicle_type: String,
        /// Whether the holder has a disabled parking permit.
        disabled_permit: bool,
        /// Where the row came from.
        source: String,
    }
}

star_table! {
    /// One date in one holiday region.
    CalendarRow => DimCalendar, partition: none,
    {
        /// The date.
        date: NaiveDate,
        /// Holiday region (`GB-ENG`, `ES-AN`, `AU-VIC`, ...).
        region: String,
        /// ISO day of week, 1 = Monday .. 7 = Sunday.
        day_of_week: i32,
        /// Saturday or Sunday.
        is_weekend: bool,
        /// Public holiday name, if the date is one in the region.
        holiday_name: Option<String>,
        /// Days until the next public holiday (0 on a holiday), capped at 366.
        days_to_holiday: i32,
        /// Days since the previous public holiday (0 on a holiday), capped at 366.
        days_from_holiday: i32,
        /// Whether the date is in a school holiday of the region, counting the weekends and public
        /// holidays that join a holiday to the school days around it; null where the region's
        /// calendar has no school-holiday data for the date, and in files written before format 2.
        #[added_in_format = 2]
        is_school_holiday: Option<bool>,
        /// The school holiday's name, when the date is in one.
        #[added_in_format = 2]
        school_holiday_name: Option<String>,
        /// Whether the date is a bridge day: a working day between a public holiday and a weekend or
        /// another holiday (`HolidayCalendar::is_bridge_day`); null in files written before format 2.
        #[added_in_format = 2]
        is_bridge_day: Option<bool>,
        /// Days until the next major holiday (a public holiday from 24 December to 3 January or from
        /// Holy Thursday to Easter Monday; 0 on one), capped at 366; null in files written before
        /// format 2.
        #[added_in_format = 2]
        days_to_major_holiday: Option<i32>,
        /// Days since the previous major holiday (0 on one), capped at 366; null in files written
        /// before format 2.
        #[added_in_format = 2]
        days_from_major_holiday: Option<i32>,
    }
}

star_table! {
    /// A tariff: the price of parking in a zone (or one lot of it) in a time band, over a validity
    /// range. The operational store keeps bands and tariffs apart (a snowflake); here the band is
    /// folded in.
    TariffRow => DimTariff, partition: none,
    {
        /// Unique tariff id (`fact_payment.tariff_id`); a price change is a new tariff.
        tariff_id: String,
        /// The plan's name, stable across price changes (`street_2h`).
        code: String,
        /// The zone it applies in.
        zone_id: String,
        /// The one lot it applies to, when it is a lot's own price; null: every lot of the zone.
        lot_id: Option<String>,
        /// The time band's id.
        band_id: String,
        /// The band's start, minutes after local midnight.
        band_starts_minute: i32,
        /// The band's end, minutes after local midnight (1440: midnight at the end of the day).
        band_ends_minute: i32,
        /// ISO weekdays the band applies on (1 = Monday), comma-separated.
        band_weekdays: String,
        /// Price per started hour, cents.
        cents_per_hour: i64,
        /// Most charged for one stay, cents.
        cap_cents: Option<i64>,
        /// Flat price per stay, cents (event days); the hourly price does not apply.
        flat_cents: Option<i64>,
        /// Longest stay allowed, minutes.
        max_stay_minutes: Option<i32>,
        /// Fine for an overstay or a stay without payment, cents.
        penalty_cents: Option<i64>,
        /// In force from (UTC, ms).
        valid_from: DateTime<Utc>,
        /// In force until (UTC, ms, exclusive); null: still in force.
        valid_until: Option<DateTime<Utc>>,
        /// ISO 4217 currency code.
        currency: String,
        /// Where the row came from.
        source: String,
    }
}

star_table! {
    /// A special event that moves demand at one lot.
    EventRow => DimEvent, partition: none,
    {
        /// Unique event id.
        event_id: String,
        /// The lot whose demand the event moves.
        lot_id: String,
        /// Human-readable name.
        name: String,
        /// `match`, `concert`, `market`, ...
        kind: String,
        /// Start (UTC, ms).
        start_ts: DateTime<Utc>,
        /// End (UTC, ms).
        end_ts: DateTime<Utc>,
        /// Expected visitors who arrive by car.
        expected_cars: i32,
        /// Where the row came from.
        source: String,
    }
}

impl Table {
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
            Table::DimTariff => TariffRow::COLUMNS,
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
}

/// The `dim_calendar` rows of `calendar` for every date in `[first, last]`.
pub fn calendar_rows(
    calendar: &HolidayCalendar,
    first: NaiveDate,
    last: NaiveDate,
) -> Vec<CalendarRow> {
    let mut rows = Vec::new();
    let mut date = first;
    while date <= last {
        let school_holiday = calendar.school_holiday(date);
        rows.push(CalendarRow {
            date,
            region: calendar.region().to_owned(),
            day_of_week: date.weekday().number_from_monday() as i32,
            is_weekend: is_weekend(date),
            holiday_name: calendar.holiday(date).map(str::to_owned),
            days_to_holiday: calendar.days_to_holiday(date),
            days_from_holiday: calendar.days_from_holiday(date),
            is_school_holiday: calendar.school_holiday_flag(date),
            school_holiday_name: school_holiday.map(|holiday| holiday.name.clone()),
            is_bridge_day: Some(calendar.is_bridge_day(date)),
            days_to_major_holiday: Some(calendar.days_to_major_holiday(date)),
            days_from_major_holiday: Some(calendar.days_from_major_holiday(date)),
        });
        date = date + Days::new(1);
    }
    rows
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use parkcast_features::calendar::MAX_HOLIDAY_DISTANCE_DAYS;

    use crate::schema::ColumnType;

    fn date(year: i32, month: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(year, month, day).expect("valid date")
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

    #[test]
    fn rows_cover_every_date_with_weekday_and_weekend() {
        let calendar =
            HolidayCalendar::from_dates("XX", [(date(2024, 1, 1), "New Year".to_owned())]);
        let rows = calendar_rows(&calendar, date(2023, 12, 30), date(2024, 1, 2));
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].day_of_week, 6);
        assert!(rows[0].is_weekend && rows[1].is_weekend && !rows[2].is_weekend);
        assert_eq!(rows[2].holiday_name.as_deref(), Some("New Year"));
        assert_eq!(rows[0].days_to_holiday, 2);
        assert_eq!(rows[3].days_from_holiday, 1);
        assert_eq!(rows[0].days_from_holiday, MAX_HOLIDAY_DISTANCE_DAYS);
        assert!(rows.iter().all(|row| row.is_school_holiday.is_none()));
        assert_eq!(rows[2].days_to_major_holiday, Some(0));
        assert_eq!(rows[3].is_bridge_day, Some(false));
    }

    #[test]
    fn rows_carry_the_school_holidays_and_bridge_days() {
        let calendar = HolidayCalendar::load(&"GB-ENG".parse().expect("an embedded region"));
        let rows = calendar_rows(&calendar, date(2016, 12, 15), date(2016, 12, 18));
        let school: Vec<(Option<bool>, Option<&str>)> = rows
            .iter()
            .map(|row| (row.is_school_holiday, row.school_holiday_name.as_deref()))
            .collect();
        assert_eq!(
            school,
            [
                (Some(false), None),
                (Some(false), None),
                (Some(true), Some("Christmas holidays")),
                (Some(true), Some("Christmas holidays")),
            ]
        );
        assert_eq!(rows[0].days_to_major_holiday, Some(10));
    }
}
