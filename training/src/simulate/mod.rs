//! A seeded, deterministic city simulator that writes a complete warehouse.
//!
//! Demand is a time-varying Poisson process per lot: an hourly shape per kind of lot and day type
//! (weekday, Friday, Saturday, Sunday or holiday), scaled by a day level that mixes a city-wide
//! autocorrelated shock, lot noise and seasonal factors, plus crowds around stadium events. Each driver
//! takes a free slot of a suitable type or is turned away; stays are log-normal per kind of lot;
//! street parkers prepay within a time limit and some overstay and are fined. Sensors report status
//! changes after a settling delay, send heartbeats, and misbehave as field sensors do: late and
//! duplicated deliveries, outages that lose readings, sensors stuck on one value for days.
//! `fact_lot_occupancy` is then derived from what the sensors said, with the same rules live serving
//! uses ([`parkcast_features::occupancy`]).
//!
//! Determinism: every lot draws from its own ChaCha8 streams (demand and sensors apart) derived from
//! the seed, lots run in parallel but are merged in lot order, and rows are written in a fixed order, so
//! the same parameters give byte-identical Parquet files.

pub mod city;
pub mod demand;
pub mod lot;
pub mod params;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate};
use parkcast_features::occupancy::OccupancyPoint;
use parkcast_warehouse::rows::{LotOccupancyRow, ParkingSessionRow, PaymentRow};
use parkcast_warehouse::schema::Table;
use parkcast_warehouse::{FrameRow, Warehouse, WarehouseError, WriteStats};
use polars::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

pub use city::City;
pub use lot::{LotStats, SimReading};
pub use params::{CheckedParams, ParamsError, SimulationParams, TariffChange};

use lot::{DayContext, LotDay, LotSim, timestamp};

/// `source` of every simulated row.
pub const SOURCE: &str = "simulated";
/// Writer name of the simulator's files (`part-sim-<day>.parquet`).
pub const WRITER: &str = "sim";

/// Where a city's transactions go when its operator's backend is simulated too
/// (`parkcast simulate --postgres`): customers, vehicles, tariffs and every slip, as the backend
/// would record them. The warehouse then gets no `dim_customer`, `dim_vehicle` or `fact_payment`
/// from the simulator: the ETL brings them from the backend, as it would in a real city.
pub trait TransactionSink {
    /// The city, before the first day.
    fn city(&mut self, checked: &CheckedParams, city: &City) -> Result<(), SinkError>;
    /// One simulated local day: the stays that began on it and the slips paid on it.
    fn day(
        &mut self,
        date: NaiveDate,
        sessions: &[ParkingSessionRow],
        slips: &[PaymentRow],
    ) -> Result<(), SinkError>;
    /// After the last day.
    fn finish(&mut self) -> Result<(), SinkError>;
}

/// A [`TransactionSink`]'s failure, in its own words.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of a simulation run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimulationError {
    /// Writing the warehouse failed.
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    /// The transaction sink failed.
    #[error("writing the simulated backend's transactions: {0}")]
    Sink(SinkError),
    /// Building a frame failed.
    #[error("building the {table} frame: {source}")]
    Frame {
        /// The table.
        table: Table,
        /// The polars error.
        source: PolarsError,
    },
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct SimulationReport {
    /// Lots.
    pub lots: usize,
    /// Slots over all lots.
    pub slots: usize,
    /// Days simulated.
    pub days: u32,
    /// Customers.
    pub customers: usize,
    /// Vehicles.
    pub vehicles: usize,
    /// Special events.
    pub events: usize,
    /// Stays begun.
    pub sessions: u64,
    /// Counters over all lots.
    pub stats: LotStats,
    /// What each table received.
    pub written: Vec<(Table, WriteStats)>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Simulates the city and writes every table of the warehouse (replacing earlier simulator files).
pub fn simulate(
    checked: &CheckedParams,
    warehouse: &Warehouse,
    progress: &dyn crate::progress::Progress,
) -> Result<SimulationReport, SimulationError> {
    simulate_with(checked, warehouse, progress, None)
}

/// [`simulate`], with the city's transactions sent to `sink` instead of the warehouse's customer,
/// vehicle and payment tables.
pub fn simulate_with(
    checked: &CheckedParams,
    warehouse: &Warehouse,
    progress: &dyn crate::progress::Progress,
    mut sink: Option<&mut dyn TransactionSink>,
) -> Result<SimulationReport, SimulationError> {
    let started = Instant::now();
    let params = checked.params();
    let calendar = checked.calendar();
    let mut city_rng = ChaCha8Rng::seed_from_u64(params.seed);
    city_rng.set_stream(0);

    progress.stage("building the city", None);
    let city = city::build_city(checked, &mut city_rng);
    let mut written: BTreeMap<Table, WriteStats> = BTreeMap::new();
    for table in Table::ALL {
        warehouse.clear_writer(table, WRITER)?;
    }
    let events: Vec<_> = city.events.iter().map(|event| event.row.clone()).collect();
    record(
        &mut written,
        Table::DimZone,
        warehouse.replace(WRITER, &city.zone_rows)?,
    );
    record(
        &mut written,
        Table::DimLot,
        warehouse.replace(WRITER, &city.lot_rows)?,
    );
    record(
        &mut written,
        Table::DimSlot,
        warehouse.replace(WRITER, &city.slot_rows)?,
    );
    match sink.as_deref_mut() {
        Some(sink) => sink.city(checked, &city).map_err(SimulationError::Sink)?,
        None => {
            record(
                &mut written,
                Table::DimCustomer,
                warehouse.replace(WRITER, &city.customer_rows)?,
            );
            record(
                &mut written,
                Table::DimVehicle,
                warehouse.replace(WRITER, &city.vehicle_rows)?,
            );
        }
    }
    record(
        &mut written,
        Table::DimEvent,
        warehouse.replace(WRITER, &events)?,
    );
    let calendar_rows =
        parkcast_warehouse::rows::calendar_rows(calendar, params.start_date, checked.end_date());
    record(
        &mut written,
        Table::DimCalendar,
        warehouse.replace(WRITER, &calendar_rows)?,
    );

    let city_levels = city_levels(params.days, &mut city_rng);
    let start = checked.start_utc();
    let end = checked.end_utc();
    let mut lots: Vec<LotSim<'_>> = city
        .lots
        .iter()
        .map(|lot| LotSim::new(lot, &city, params, start, end))
        .collect();

    progress.stage("simulating days", Some(u64::from(params.days)));
    for (day_index, city_level) in city_levels.iter().enumerate() {
        let date = params.start_date + Days::new(day_index as u64);
        let day = DayContext {
            date,
            day_index,
            start_ms: params::day_start(params.timezone, date).timestamp_millis(),
            end_ms: params::day_start(params.timezone, date + Days::new(1)).timestamp_millis(),
            city_level: *city_level,
            day_type: lot::day_type(calendar, date),
        };
        let outputs: Vec<LotDay> = lots
            .par_iter_mut()
            .map(|lot| lot.run_day(&day, calendar))
            .collect();
        write_day(
            warehouse,
            &city,
            &day,
            outputs,
            sink.as_deref_mut(),
            &mut written,
        )?;
        progress.advance(1);
    }
    if let Some(sink) = sink {
        sink.finish().map_err(SimulationError::Sink)?;
    }

    let mut stats = LotStats::default();
    for lot in &lots {
        stats.add(&lot.stats());
    }
    Ok(SimulationReport {
        lots: city.lots.len(),
        slots: city.slot_rows.len(),
        days: params.days,
        customers: city.customers.len(),
        vehicles: city.vehicles.len(),
        events: city.events.len(),
        sessions: stats.sessions,
        stats,
        written: written.into_iter().collect(),
        elapsed: started.elapsed(),
    })
}

fn record(written: &mut BTreeMap<Table, WriteStats>, table: Table, stats: WriteStats) {
    written.entry(table).or_default().add(&stats);
}

/// Day levels shared by all lots: an AR(1) process on the log scale, like weather and the local
/// economy moving everyone's demand together for a few days.
fn city_levels(days: u32, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let shock = Normal::new(0.0, 0.05).expect("shock parameters should be valid");
    let mut log_level = 0.0;
    (0..days)
        .map(|_| {
            log_level = 0.6 * log_level + shock.sample(rng);
            f64::exp(log_level)
        })
        .collect()
}

/// Writes one day's output of every lot: one file per table and UTC partition date, named after the day.
fn write_day<'sink>(
    warehouse: &Warehouse,
    city: &City,
    day: &DayContext,
    outputs: Vec<LotDay>,
    sink: Option<&mut (dyn TransactionSink + 'sink)>,
    written: &mut BTreeMap<Table, WriteStats>,
) -> Result<(), SimulationError> {
    let part = u32::try_from(day.day_index).expect("day index should fit in u32");
    let mut readings: Vec<(u32, SimReading)> = Vec::new();
    let mut occupancy = Vec::new();
    let mut sessions = Vec::new();
    let mut scans = Vec::new();
    let mut payments = Vec::new();
    for (lot_index, output) in outputs.into_iter().enumerate() {
        let lot = &city.lots[lot_index];
        readings.extend(
            output
                .readings
                .into_iter()
                .map(|reading| (lot_index as u32, reading)),
        );
        occupancy.extend(
            output
                .occupancy
                .iter()
                .map(|point: &OccupancyPoint| LotOccupancyRow {
                    lot_id: lot.lot_id.clone(),
                    ts: timestamp(point.ts_ms),
                    occupied: point.occupied,
                    unknown: point.unknown,
                    capacity: lot.capacity(),
                    source: SOURCE.to_owned(),
                }),
        );
        sessions.extend(output.sessions);
        scans.extend(output.scans);
        payments.extend(output.payments);
    }

    // Archive order: as the backend received the readings.
    readings.sort_unstable_by_key(|(lot, reading)| {
        (reading.received_ms, *lot, reading.slot, reading.seq)
    });
    let mut readings_by_date: BTreeMap<NaiveDate, Vec<(u32, SimReading)>> = BTreeMap::new();
    for entry in readings {
        readings_by_date
            .entry(timestamp(entry.1.ts_ms).date_naive())
            .or_default()
            .push(entry);
    }
    for (date, readings) in readings_by_date {
        let mut frame =
            readings_frame(city, &readings).map_err(|source| SimulationError::Frame {
                table: Table::FactSlotStatus,
                source,
            })?;
        let stats =
            warehouse.write_frame(Table::FactSlotStatus, WRITER, Some(date), part, &mut frame)?;
        record(written, Table::FactSlotStatus, stats);
    }
    write_by_date(warehouse, part, occupancy, written)?;
    match sink {
        Some(sink) => sink
            .day(day.date, &sessions, &payments)
            .map_err(SimulationError::Sink)?,
        None => write_by_date(warehouse, part, payments, written)?,
    }
    write_by_date(warehouse, part, sessions, written)?;
    write_by_date(warehouse, part, scans, written)?;
    Ok(())
}

fn write_by_date<R: FrameRow>(
    warehouse: &Warehouse,
    part: u32,
    rows: Vec<R>,
    written: &mut BTreeMap<Table, WriteStats>,
) -> Result<(), SimulationError> {
    let mut by_date: BTreeMap<NaiveDate, Vec<R>> = BTreeMap::new();
    for row in rows {
        let date = row
            .partition_date()
            .expect("fact rows should have a partition date");
        by_date.entry(date).or_default().push(row);
    }
    for (date, rows) in by_date {
        let stats = warehouse.write_file(WRITER, Some(date), part, &rows)?;
        record(written, R::TABLE, stats);
    }
    Ok(())
}

/// The `fact_slot_status` frame of a day's readings, built column by column without a row struct: the
/// sensor table is most of the data, and slot ids are copied straight from the city into Arrow buffers.
fn readings_frame(city: &City, readings: &[(u32, SimReading)]) -> PolarsResult<DataFrame> {
    let lot_of = |lot: u32| &city.lots[lot as usize];
    let columns = vec![
        Int64Chunked::from_iter_values(
            "ts".into(),
            readings.iter().map(|(_, reading)| reading.ts_ms),
        )
        .into_datetime(TimeUnit::Milliseconds, None)
        .into_column(),
        Int64Chunked::from_iter_values(
            "received_ts".into(),
            readings.iter().map(|(_, reading)| reading.received_ms),
        )
        .into_datetime(TimeUnit::Milliseconds, None)
        .into_column(),
        StringChunked::from_iter_values(
            "slot_id".into(),
            readings
                .iter()
                .map(|(lot, reading)| lot_of(*lot).slot_ids[reading.slot as usize].as_str()),
        )
        .into_column(),
        StringChunked::from_iter_values(
            "lot_id".into(),
            readings.iter().map(|(lot, _)| lot_of(*lot).lot_id.as_str()),
        )
        .into_column(),
        BooleanChunked::from_iter_values(
            "occupied".into(),
            readings.iter().map(|(_, reading)| reading.occupied),
        )
        .into_column(),
        StringChunked::from_iter_values(
            "kind".into(),
            readings.iter().map(|(_, reading)| {
                if reading.change {
                    "change"
                } else {
                    "heartbeat"
                }
            }),
        )
        .into_column(),
        UInt64Chunked::from_iter_values(
            "sensor_seq".into(),
            readings.iter().map(|(_, reading)| reading.seq),
        )
        .into_column(),
        StringChunked::from_iter_values("source".into(), readings.iter().map(|_| SOURCE))
            .into_column(),
    ];
    DataFrame::new(readings.len(), columns)
}
