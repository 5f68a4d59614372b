//! A small real model for the serving tests: an elastic net fitted by the inference crate on a
//! synthetic daily pattern through the shared incremental features, with conformal calibration,
//! written to a real registry. Small enough to fit in a second, real enough that every check the
//! server makes (checksum, format, schema hash, smoke prediction) runs on it.

pub mod city;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use parkcast_features::baseline::WeekdayProfile;
use parkcast_features::calendar::{DayType, HolidayCalendar};
use parkcast_features::conformal::ResidualCalibration;
use parkcast_features::grid::{GridSeries, GridValue};
use parkcast_features::vector::{
    FEATURE_NAMES, FeatureParams, LotContext, LotFeatureState, LotProfile,
};
use parkcast_inference::artifact::{BundleLot, MODEL_FILE_FORMAT, ModelBundle};
use parkcast_inference::model::{
    Forecaster, ForecasterParams, HorizonRows, LinearParams, SavedModel,
};
use parkcast_inference::registry::{Manifest, ModelCard, NewVersion, PriceResponseCard, Registry};
use parkcast_serving::live::{GridRule, LiveState, LotChange};
use parkcast_serving::scoring::LiveSource;
use parkcast_serving::topology::TopologyIndex;
use std::sync::{Mutex, PoisonError};

/// Grid step of the toy model, minutes.
pub const STEP_MINUTES: u32 = 15;
/// Its horizons, steps: 15 min, 1 h, 2 h.
pub const HORIZONS: [u32; 3] = [1, 4, 8];
pub const STEP_MS: i64 = STEP_MINUTES as i64 * 60_000;
pub const DAY_MS: i64 = 86_400_000;

/// The synthetic occupancy rate at an instant: a daily wave between 0.2 and 0.9.
pub fn rate_at(instant_ms: i64) -> f64 {
    let phase = (instant_ms.rem_euclid(DAY_MS) as f64) / DAY_MS as f64;
    0.55 - 0.35 * (2.0 * std::f64::consts::PI * phase).cos()
}

/// The grid values of a lot of `capacity` slots over `[from_ms, until_ms)`.
pub fn history(capacity: u32, from_ms: i64, until_ms: i64) -> Vec<(i64, GridValue)> {
    let first = from_ms.div_euclid(STEP_MS) * STEP_MS;
    (0..)
        .map(|step| first + step * STEP_MS)
        .take_while(|instant| *instant < until_ms)
        .map(|instant| {
            (
                instant,
                GridValue {
                    occupied: (rate_at(instant) * f64::from(capacity)).round(),
                    capacity: f64::from(capacity),
                },
            )
        })
        .collect()
}

fn context() -> LotContext {
    LotContext {
        lot_code: None,
        kind_code: None,
        timezone: chrono_tz::UTC,
        holidays: Arc::new(HolidayCalendar::from_dates("XX", [])),
        has_sessions: false,
        events: Arc::from(Vec::new()),
        tariffs: Arc::from(Vec::new()),
    }
}

/// Fits the toy model on `lots` (id, capacity) over the 21 days before `until_ms` and publishes it
/// to `registry` as `name`. Returns the manifest.
pub fn publish(registry: &Path, name: &str, lots: &[(&str, u32)], until_ms: i64) -> Manifest {
    publish_toy(registry, name, lots, until_ms, Toy::default())
}

/// Variants of the toy model.
#[derive(Debug, Clone, Copy, Default)]
pub struct Toy {
    /// The lots have sessions ([`arrivals`]) and the target rates rise with the arrivals of the
    /// last hour, so the model's forecasts depend on them.
    pub sessions: bool,
    /// The longest horizon has no calibration: a model that decodes but fails the smoke
    /// prediction.
    pub uncalibrated_longest: bool,
    /// Targets on this day type have residuals of their own, three times the pooled ones (as a
    /// holiday's errors outgrow a weekday's).
    pub wide_on: Option<DayType>,
    /// A public holiday of the lots' calendar (region `XX`), carried in the model file.
    pub holiday: Option<chrono::NaiveDate>,
    /// A price response in the manifest: the elasticity and each priced lot's hourly price,
    /// cents (a lot left out has no tariff).
    pub priced: Option<(f64, &'static [(&'static str, i64)])>,
}

/// Session entries of a toy lot with sessions over `[from_ms, until_ms)`: 0 to 3 in each grid step,
/// in a fixed irregular pattern.
pub fn arrivals(from_ms: i64, until_ms: i64) -> Vec<i64> {
    history(1, from_ms, until_ms)
        .into_iter()
        .flat_map(|(instant, _)| {
            let count = (instant / STEP_MS * 7).rem_euclid(4);
            (1..=count).map(move |minute| instant - minute * 60_000)
        })
        .filter(|at| (from_ms..until_ms).contains(at))
        .collect()
}

/// How much the toy with sessions adds to a target rate per arrival in the last hour, as a share of
/// capacity: enough for the model to weigh arrivals clearly.
const ARRIVAL_WEIGHT: f64 = 0.1;

/// [`publish`], of a [`Toy`] variant.
pub fn publish_toy(
    registry: &Path,
    name: &str,
    lots: &[(&str, u32)],
    until_ms: i64,
    toy: Toy,
) -> Manifest {
    let sessions = toy.sessions;
    let params = FeatureParams::new(STEP_MINUTES);
    let from_ms = until_ms - 21 * DAY_MS;
    let mut rows: BTreeMap<u32, HorizonRows> = BTreeMap::new();
    let mut bundle_lots = Vec::new();
    for (code, (lot_id, capacity)) in lots.iter().enumerate() {
        let values = history(*capacity, from_ms, until_ms);
        let mut series = GridSeries::new(STEP_MS, chrono_tz::UTC);
        for (instant, value) in &values {
            series.push(*instant, value.occupied, value.capacity);
        }
        let profile = WeekdayProfile::fit(&series, until_ms);
        bundle_lots.push(BundleLot {
            lot_id: (*lot_id).to_owned(),
            kind: "garage".to_owned(),
            timezone: "UTC".to_owned(),
            holiday_region: "XX".to_owned(),
            has_sessions: sessions,
            events: Vec::new(),
            tariffs: Vec::new(),
            profile_cells: profile.cells(),
            fitted_until_ms: until_ms,
        });
        let mut lot_context = context();
        lot_context.lot_code = u32::try_from(code).ok();
        lot_context.has_sessions = sessions;
        let mut entries = if sessions {
            arrivals(from_ms, until_ms)
        } else {
            Vec::new()
        }
        .into_iter()
        .peekable();
        let mut state = LotFeatureState::new(
            params,
            lot_context,
            Arc::new(LotProfile::new(profile, until_ms)),
        );
        for (instant, value) in &values {
            while let Some(at) = entries.next_if(|at| at <= instant) {
                state.push_arrival(at);
            }
            state.push_value(*instant, *value);
            if *instant < from_ms + 8 * DAY_MS {
                continue;
            }
            for horizon in HORIZONS {
                let target = instant + i64::from(horizon) * STEP_MS;
                if target >= until_ms {
                    continue;
                }
                if let Some(vector) = state.vector(horizon) {
                    let recent = vector[parkcast_features::vector::index::ARRIVALS_RECENT];
                    let lift = if sessions {
                        ARRIVAL_WEIGHT * recent
                    } else {
                        0.0
                    };
                    let entry = rows.entry(horizon * STEP_MINUTES).or_default();
                    entry.features.push(vector);
                    entry.targets.push(rate_at(target) + lift);
                }
            }
        }
    }
    let fitted = LinearParams::default()
        .fit(&rows)
        .expect("the toy model fits");
    let calibrations = rows
        .iter()
        .map(|(minutes, horizon_rows)| {
            let forecasts = fitted.predict(&horizon_rows.features);
            let residuals = horizon_rows
                .targets
                .iter()
                .zip(forecasts)
                // A floor of noise: the synthetic wave is too easy for honest intervals.
                .enumerate()
                .map(|(index, (actual, forecast))| {
                    actual - forecast + [-0.04, -0.02, 0.0, 0.02, 0.04][index % 5]
                });
            (
                *minutes,
                ResidualCalibration::fit(residuals).expect("residuals"),
            )
        })
        .filter(|(minutes, _)| {
            !(toy.uncalibrated_longest && *minutes == HORIZONS[HORIZONS.len() - 1] * STEP_MINUTES)
        })
        .collect::<BTreeMap<u32, ResidualCalibration>>();
    let day_type_calibrations = toy
        .wide_on
        .map(|day_type| {
            calibrations
                .iter()
                .map(|(minutes, pooled)| {
                    // Uniform on [-a, a]: its 80% half-width is 0.8 a, three times the pooled.
                    let a = 3.0 * pooled.half_width(0.8) / 0.8;
                    let residuals = (0..=1_000).map(|step| -a + 2.0 * a * f64::from(step) / 1e3);
                    let own = ResidualCalibration::fit(residuals).expect("residuals");
                    (*minutes, vec![(day_type, own)])
                })
                .collect()
        })
        .unwrap_or_default();
    let bundle = ModelBundle {
        format: MODEL_FILE_FORMAT,
        feature_params: params,
        horizons: HORIZONS.to_vec(),
        lots: bundle_lots,
        calibrations,
        day_type_calibrations,
        model: SavedModel::Linear(fitted)
            .to_bytes()
            .expect("the model serializes"),
        calendars: toy
            .holiday
            .map(|day| {
                let calendar = HolidayCalendar::from_dates("XX", [(day, "toy holiday".to_owned())]);
                BTreeMap::from([("XX".to_owned(), calendar)])
            })
            .unwrap_or_default(),
        lot_mae: BTreeMap::new(),
        lot_hour_mae: BTreeMap::new(),
        lot_error_spread: BTreeMap::new(),
        lot_interval_scales: BTreeMap::new(),
    };
    publish_bytes_priced(
        registry,
        name,
        &bundle.to_bytes().expect("the bundle serializes"),
        params,
        from_ms,
        until_ms,
        toy.priced.map(|(elasticity, prices)| PriceResponseCard {
            elasticity,
            standard_error: 0.0,
            lot_days: 0,
            lots_with_changes: 0,
            reference_cents_per_hour: prices
                .iter()
                .map(|(lot, cents)| ((*lot).to_owned(), *cents))
                .collect(),
        }),
    )
}

/// Publishes `bytes` as a model file: a real toy model, or garbage whose checksum is right.
pub fn publish_bytes(
    registry: &Path,
    name: &str,
    bytes: &[u8],
    params: FeatureParams,
    from_ms: i64,
    until_ms: i64,
) -> Manifest {
    publish_bytes_priced(registry, name, bytes, params, from_ms, until_ms, None)
}

/// [`publish_bytes`] with a price response in the manifest.
pub fn publish_bytes_priced(
    registry: &Path,
    name: &str,
    bytes: &[u8],
    params: FeatureParams,
    from_ms: i64,
    until_ms: i64,
    price_response: Option<PriceResponseCard>,
) -> Manifest {
    let day = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .expect("valid")
            .date_naive()
    };
    Registry::open(registry)
        .publish(NewVersion {
            card: ModelCard {
                name: name.to_owned(),
                model_kind: "linear".to_owned(),
                feature_schema_hash: params.schema_hash(),
                feature_names: FEATURE_NAMES
                    .iter()
                    .map(|name| (*name).to_owned())
                    .collect(),
                step_minutes: STEP_MINUTES,
                horizons_minutes: HORIZONS.iter().map(|h| h * STEP_MINUTES).collect(),
                source: "toy".to_owned(),
                training_start: day(from_ms),
                training_end: day(until_ms - 1).max(NaiveDate::MIN),
                hyperparameters: serde_json::json!({}),
                metrics: Vec::new(),
                price_response,
            },
            model: bytes,
            report_md: "toy model for tests\n",
            attachments: Vec::new(),
        })
        .expect("the version publishes")
        .manifest
}

/// Real live state behind a lock, as ingestion keeps it.
pub struct Source {
    topology: TopologyIndex,
    live: Mutex<LiveState>,
    /// Pictures are taken at this instant when the scorer gives none.
    now_ms: i64,
}

impl Source {
    pub fn new(topology: TopologyIndex, live: LiveState, now_ms: i64) -> Source {
        Source {
            topology,
            live: Mutex::new(live),
            now_ms,
        }
    }

    pub fn live(&self) -> std::sync::MutexGuard<'_, LiveState> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LiveSource for Source {
    fn topology(&self) -> &TopologyIndex {
        &self.topology
    }

    fn set_grid(&self, rule: Option<GridRule>) {
        self.live().set_grid(rule);
    }

    fn take_changes(
        &self,
        now_ms: Option<i64>,
        all: bool,
        out: &mut Vec<LotChange>,
    ) -> Option<i64> {
        let mut live = self.live();
        let newest = live.stream_time_ms();
        live.take_changes(now_ms.or(newest).unwrap_or(self.now_ms), all, out);
        newest
    }

    fn stale_reason(&self) -> Option<String> {
        None
    }

    fn caught_up(&self) -> bool {
        true
    }
}
