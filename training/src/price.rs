//! The price response learned from the data: the elasticity of a lot's arrivals to its price.
//!
//! Where a city has tariffs (`dim_tariff`, loaded by `parkcast etl`), the price in force at each
//! lot on each day is known, and so are the day's arrivals (`fact_parking_session`). The model is
//! the one economists fit to price changes:
//!
//! ```text
//! ln arrivals[lot, day] = a[lot] + b[day] + c[kind of lot, weekday] + e * ln price[lot, day] + noise
//! ```
//!
//! The lot effects absorb each lot's size and appeal, the day effects whatever moves the whole city
//! on a day (weather, the economy, holidays), the kind-by-weekday effects each kind's weekly rhythm;
//! `e` is then identified only by lots whose prices changed *differently* from others'. A change
//! of every price at once moves with the day effects and cannot be told apart from a bad week, so
//! it is refused as not identified rather than guessed. The effects are removed by alternating
//! projections (each group's mean subtracted in turn until nothing moves), then `e` is the slope of
//! what remains. Lot-days with fewer than [`MIN_ARRIVALS`] arrivals (an empty stadium) are left out:
//! the log of a handful is mostly noise.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, NaiveDate};
use chrono_tz::Tz;
use parkcast_features::vector::{HourlyTariff, price_in_force};
use parkcast_inference::registry::PriceResponseCard;
use parkcast_warehouse::lots::{LotsError, load_tariffs};
use parkcast_warehouse::rows::LotRow;
use parkcast_warehouse::schema::Table;
use parkcast_warehouse::{Warehouse, WarehouseError};
use polars::prelude::*;

/// Lot-days with fewer arrivals are left out of the fit.
pub const MIN_ARRIVALS: u32 = 5;

/// Why no price response could be learned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PriceError {
    /// Reading the warehouse failed.
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    /// Reading the lots' tariffs failed.
    #[error(transparent)]
    Tariffs(#[from] LotsError),
    /// Reading a sessions file failed.
    #[error("reading {context}: {source}")]
    Polars {
        /// What was read.
        context: String,
        /// The error.
        source: PolarsError,
    },
    /// The source has no tariffs.
    #[error(
        "source {0:?} has no tariffs in dim_tariff (run `parkcast etl` for a city with an operational store)"
    )]
    NoTariffs(String),
    /// Prices did not vary across lots beyond what the day effects absorb.
    #[error(
        "prices of {0:?} never changed differently across lots (or never changed): the price response is not identified; a change of every price at once looks like any other busy or quiet week"
    )]
    NotIdentified(String),
}

/// The learned price response.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriceResponse {
    /// Arrivals scale with price to this power.
    pub elasticity: f64,
    /// Its standard error (residuals assumed independent; an indication, not a test).
    pub standard_error: f64,
    /// Lot-days in the fit.
    pub lot_days: usize,
    /// Lots whose price changed in the data.
    pub lots_with_changes: usize,
}

/// Learns the price elasticity of `source`'s arrivals (see the module documentation).
pub fn estimate_elasticity(
    warehouse: &Warehouse,
    source: &str,
) -> Result<PriceResponse, PriceError> {
    let (lots, tariffs) = lot_tariffs(warehouse, source)?;
    estimate_with(warehouse, source, &lots, &tariffs)
}

/// [`estimate_elasticity`] with `source`'s lots and tariffs already read.
fn estimate_with(
    warehouse: &Warehouse,
    source: &str,
    lots: &HashMap<String, LotRow>,
    tariffs: &LotTariffs,
) -> Result<PriceResponse, PriceError> {
    let arrivals = daily_arrivals(warehouse, source)?;
    // One observation per lot-day with a price and enough arrivals.
    let mut rows: Vec<Observation> = Vec::new();
    let mut prices_seen: HashMap<&str, Vec<i64>> = HashMap::new();
    for ((lot_id, date), count) in &arrivals {
        if *count < MIN_ARRIVALS {
            continue;
        }
        let Some(lot) = lots.get(lot_id) else {
            continue;
        };
        let Some(price) = price_on(tariffs, lot, *date) else {
            continue;
        };
        prices_seen.entry(lot_id.as_str()).or_default().push(price);
        rows.push(Observation {
            lot: lot_id.clone(),
            day: *date,
            kind_weekday: format!("{}:{}", lot.kind, date.weekday()),
            y: f64::from(*count).ln(),
            x: (price as f64).ln(),
        });
    }
    let lots_with_changes = prices_seen
        .values()
        .filter(|prices| prices.iter().any(|price| *price != prices[0]))
        .count();
    if lots_with_changes == 0 || rows.len() < 3 {
        return Err(PriceError::NotIdentified(source.to_owned()));
    }
    demean(&mut rows);
    let sxx: f64 = rows.iter().map(|row| row.x * row.x).sum();
    let sxy: f64 = rows.iter().map(|row| row.x * row.y).sum();
    // What is left of ln price after the effects: nothing, when every price moved together.
    let spread = (sxx / rows.len() as f64).sqrt();
    if spread < 1e-4 {
        return Err(PriceError::NotIdentified(source.to_owned()));
    }
    let elasticity = sxy / sxx;
    let residual: f64 = rows
        .iter()
        .map(|row| (row.y - elasticity * row.x).powi(2))
        .sum::<f64>()
        / (rows.len() as f64 - 1.0).max(1.0);
    Ok(PriceResponse {
        elasticity,
        standard_error: (residual / sxx).sqrt(),
        lot_days: rows.len(),
        lots_with_changes,
    })
}

/// The price response of `source` with each lot's hourly price in force on `as_of` (UTC noon):
/// what a published model records for pricing what-ifs.
pub fn learn(
    warehouse: &Warehouse,
    source: &str,
    as_of: NaiveDate,
) -> Result<PriceResponseCard, PriceError> {
    let (lots, tariffs) = lot_tariffs(warehouse, source)?;
    let response = estimate_with(warehouse, source, &lots, &tariffs)?;
    let reference_cents_per_hour = lots
        .values()
        .filter_map(|lot| price_on(&tariffs, lot, as_of).map(|price| (lot.lot_id.clone(), price)))
        .collect();
    Ok(PriceResponseCard {
        elasticity: response.elasticity,
        standard_error: response.standard_error,
        lot_days: response.lot_days as u64,
        lots_with_changes: response.lots_with_changes as u64,
        reference_cents_per_hour,
    })
}

/// `source`'s lots and the hourly tariffs of each (`parkcast_warehouse::lots::load_tariffs`, the
/// rule the features use); [`PriceError::NoTariffs`] when no lot has one.
fn lot_tariffs(
    warehouse: &Warehouse,
    source: &str,
) -> Result<(HashMap<String, LotRow>, LotTariffs), PriceError> {
    let lots: HashMap<String, LotRow> = warehouse
        .read_rows::<LotRow>()?
        .into_iter()
        .filter(|lot| lot.source == source)
        .map(|lot| (lot.lot_id.clone(), lot))
        .collect();
    let tariffs = load_tariffs(warehouse, &lots)?;
    if tariffs.is_empty() {
        return Err(PriceError::NoTariffs(source.to_owned()));
    }
    Ok((lots, tariffs))
}

type LotTariffs = HashMap<String, Vec<HourlyTariff>>;

struct Observation {
    lot: String,
    day: NaiveDate,
    kind_weekday: String,
    y: f64,
    x: f64,
}

/// Removes the lot, day and kind-by-weekday means from `y` and `x` by alternating projections.
fn demean(rows: &mut [Observation]) {
    let groups: [fn(&Observation) -> String; 3] = [
        |row| row.lot.clone(),
        |row| row.day.to_string(),
        |row| row.kind_weekday.clone(),
    ];
    for _ in 0..500 {
        let mut moved = 0.0_f64;
        for key in groups {
            let mut sums: HashMap<String, (f64, f64, f64)> = HashMap::new();
            for row in rows.iter() {
                let entry = sums.entry(key(row)).or_default();
                entry.0 += row.y;
                entry.1 += row.x;
                entry.2 += 1.0;
            }
            for row in rows.iter_mut() {
                let (y, x, n) = sums[&key(row)];
                row.y -= y / n;
                row.x -= x / n;
                moved = moved.max((y / n).abs()).max((x / n).abs());
            }
        }
        if moved < 1e-10 {
            break;
        }
    }
}

/// The hourly price in force at `lot` at noon UTC of `date`, in cents
/// ([`parkcast_features::vector::price_in_force`]: its own tariff, else its zone's).
fn price_on(tariffs: &LotTariffs, lot: &LotRow, date: NaiveDate) -> Option<i64> {
    let noon = date.and_hms_opt(12, 0, 0)?.and_utc().timestamp_millis();
    let timezone: Tz = lot.timezone.parse().unwrap_or(Tz::UTC);
    price_in_force(tariffs.get(&lot.lot_id)?, timezone, noon)
}

/// Arrivals per lot and UTC day, read one file at a time.
fn daily_arrivals(
    warehouse: &Warehouse,
    source: &str,
) -> Result<BTreeMap<(String, NaiveDate), u32>, PriceError> {
    let mut arrivals: BTreeMap<(String, NaiveDate), u32> = BTreeMap::new();
    for file in warehouse.table_files(Table::FactParkingSession)? {
        let frame = warehouse
            .scan_files(Table::FactParkingSession, std::slice::from_ref(&file))?
            .filter(col("source").eq(lit(source)))
            .select([col("lot_id"), col("entry_ts")])
            .collect()
            .map_err(|source| PriceError::Polars {
                context: file.display().to_string(),
                source,
            })?;
        let polars_error = |source| PriceError::Polars {
            context: file.display().to_string(),
            source,
        };
        let lot_ids = frame
            .column("lot_id")
            .and_then(|column| column.str().cloned())
            .map_err(polars_error)?;
        let entries = frame
            .column("entry_ts")
            .and_then(|column| column.datetime().cloned())
            .map_err(polars_error)?;
        for (lot_id, entry) in lot_ids.iter().zip(entries.physical().iter()) {
            let (Some(lot_id), Some(entry)) = (lot_id, entry) else {
                continue;
            };
            let Some(date) = DateTime::from_timestamp_millis(entry).map(|ts| ts.date_naive())
            else {
                continue;
            };
            *arrivals.entry((lot_id.to_owned(), date)).or_default() += 1;
        }
    }
    Ok(arrivals)
}
