//! The model file (`model.bin`): everything serving needs to turn live state into forecasts with
//! exactly the training-time feature definitions.
//!
//! It holds the feature parameters (and so the schema hash), the lots the model knows with their
//! fitted profiles and contexts, the fitted model, and split-conformal residuals per horizon for the
//! intervals and probabilities. The body is MessagePack, gzipped: every f64 keeps its 8 bytes, so a
//! loaded model predicts bit for bit what the trained one did.
//!
//! | format | what changed |
//! | --- | --- |
//! | 1 | the first layout; serving re-loads each lot's calendar from the embedded holiday data |
//! | 2 | [`ModelBundle::calendars`]: the calendar of every lot's region (public and school holidays) as training saw it, so a user's own region or calendar file serves as it trained, and a newer build's embedded data cannot change a trained model's features; [`ModelBundle::day_type_calibrations`]: residuals per day type of the target, so a Saturday's or a holiday's interval is calibrated on such days |
//!
//! A format 1 file still loads: its lots get the embedded calendars, as before.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono_tz::Tz;
use parkcast_features::baseline::WeekdayProfile;
use parkcast_features::calendar::{CalendarSource, DayType, HolidayCalendar};
use parkcast_features::conformal::{
    CalibrationScope, IntervalScale, ResidualCalibration, calibration_of_day,
};
use parkcast_features::vector::{
    FeatureParams, HourlyTariff, LotContext, LotFeatureState, LotProfile, ScheduledEvent, index,
    lot_kind_code,
};
use serde::{Deserialize, Serialize};

use crate::model::{Forecaster, ModelError, SavedModel, pack, unpack};
use crate::reference::REFERENCE_LEN;

/// Version of the model file layout this build writes.
pub const MODEL_FILE_FORMAT: u32 = 2;

/// The oldest model file layout this build reads.
pub const OLDEST_MODEL_FILE_FORMAT: u32 = 1;

/// A lot as the model knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleLot {
    /// The lot.
    pub lot_id: String,
    /// Its kind.
    pub kind: String,
    /// IANA time zone.
    pub timezone: String,
    /// Holiday region code.
    pub holiday_region: String,
    /// Whether it records sessions.
    pub has_sessions: bool,
    /// Its scheduled events known at training time.
    pub events: Vec<ScheduledEvent>,
    /// Its hourly tariffs and its zone's known at training time (none in files written before
    /// them).
    #[serde(default)]
    pub tariffs: Vec<HourlyTariff>,
    /// Profile cells: (weekday, slot of day, sum of rates, count).
    pub profile_cells: Vec<(u32, u32, f64, u32)>,
    /// The profile's fit cut-off, ms.
    pub fitted_until_ms: i64,
}

/// The contents of a model file.
#[derive(Serialize, Deserialize)]
pub struct ModelBundle {
    /// [`MODEL_FILE_FORMAT`] at write time.
    pub format: u32,
    /// Feature parameters the model was trained with.
    pub feature_params: FeatureParams,
    /// Horizons, in grid steps.
    pub horizons: Vec<u32>,
    /// Lots in model order (a lot's position is its `lot_code`).
    pub lots: Vec<BundleLot>,
    /// Conformal residuals per horizon (minutes).
    pub calibrations: BTreeMap<u32, ResidualCalibration>,
    /// Conformal residuals per horizon (minutes) and day type of the target, for the day types the
    /// last backtest window had enough residuals of (format 2; empty in a format 1 file): where
    /// present they calibrate a target on that day type instead of [`ModelBundle::calibrations`].
    #[serde(default)]
    pub day_type_calibrations: BTreeMap<u32, Vec<(DayType, ResidualCalibration)>>,
    /// The fitted model ([`SavedModel::to_bytes`]).
    pub model: Vec<u8>,
    /// The calendar of each lot's holiday region, by region code, as training used it (format 2;
    /// empty in a format 1 file). A lot whose region is missing here gets the embedded calendar.
    #[serde(default)]
    pub calendars: BTreeMap<String, HolidayCalendar>,
    /// Each lot's backtest MAE of the rate per horizon (minutes), of the model this file holds,
    /// over the backtest's test windows (empty in files written before it): what the server's
    /// live-accuracy monitor holds a lot to, since lots differ (a small lot's rate moves in large
    /// steps).
    #[serde(default)]
    pub lot_mae: BTreeMap<String, BTreeMap<u32, f64>>,
    /// The same by day type and local hour of the target ([`crate::reference`]: one MAE per day
    /// type and hour, resolved from the lot's backtest pairs; empty in files written before it): a
    /// lot's error is not flat over the day, so the monitor judges each hour against the same
    /// hour.
    #[serde(default)]
    pub lot_hour_mae: BTreeMap<String, BTreeMap<u32, Vec<f32>>>,
    /// Each lot's spread of daily MAE per horizon (minutes) over the backtest's days
    /// ([`crate::reference::HourlyError::spread`]; empty in files written before it): how much
    /// worse than its reference an ordinary bad day of the lot is.
    #[serde(default)]
    pub lot_error_spread: BTreeMap<String, BTreeMap<u32, f32>>,
    /// Each lot's scale of residuals per horizon (minutes)
    /// ([`parkcast_features::conformal::lot_scales`]): the calibrations hold residuals divided by
    /// their lot's scale, and a lot's intervals and probabilities multiply it back. Absent for a
    /// lot (or in files written before it, whose residuals are not divided): 1.
    #[serde(default)]
    pub lot_interval_scales: BTreeMap<String, BTreeMap<u32, f64>>,
}

impl ModelBundle {
    /// Gzipped MessagePack bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        pack(self)
    }

    /// Decodes and checks a model file: the format, and that every lot's time zone parses.
    pub fn from_bytes(bytes: &[u8]) -> Result<ModelBundle, ModelError> {
        let corrupt = |error: &dyn std::fmt::Display| ModelError::Corrupt(error.to_string());
        let bundle: ModelBundle = unpack(bytes)?;
        if !(OLDEST_MODEL_FILE_FORMAT..=MODEL_FILE_FORMAT).contains(&bundle.format) {
            return Err(ModelError::Corrupt(format!(
                "model file format {} (this build reads {OLDEST_MODEL_FILE_FORMAT} to {MODEL_FILE_FORMAT})",
                bundle.format
            )));
        }
        for (region, calendar) in &bundle.calendars {
            if calendar.region() != region {
                return Err(ModelError::Corrupt(format!(
                    "the calendar stored for region {region} is {}'s",
                    calendar.region()
                )));
            }
        }
        bundle
            .feature_params
            .validate()
            .map_err(|error| corrupt(&error))?;
        for (lot_id, horizons) in &bundle.lot_hour_mae {
            if let Some((minutes, reference)) = horizons
                .iter()
                .find(|(_, reference)| reference.len() != REFERENCE_LEN)
            {
                return Err(ModelError::Corrupt(format!(
                    "lot {lot_id}'s hourly backtest MAE at {minutes} min has {} entries, not \
                     {REFERENCE_LEN}",
                    reference.len()
                )));
            }
        }
        for (lot_id, horizons) in &bundle.lot_interval_scales {
            if let Some((minutes, scale)) = horizons
                .iter()
                .find(|(_, scale)| !(scale.is_finite() && **scale > 0.0))
            {
                return Err(ModelError::Corrupt(format!(
                    "lot {lot_id}'s interval scale at {minutes} min is {scale}, not a positive number"
                )));
            }
        }
        for lot in &bundle.lots {
            lot.timezone.parse::<Tz>().map_err(|_| {
                ModelError::Corrupt(format!(
                    "lot {} has time zone {:?}",
                    lot.lot_id, lot.timezone
                ))
            })?;
        }
        Ok(bundle)
    }

    /// Decodes the model and builds each lot's context and profile.
    pub fn load(self) -> Result<LoadedModel, ModelError> {
        let model = SavedModel::from_bytes(&self.model)?;
        let mut calendars: BTreeMap<String, Arc<HolidayCalendar>> = BTreeMap::new();
        let mut lots = BTreeMap::new();
        let interval_scales = self
            .lots
            .iter()
            .map(|lot| {
                self.lot_interval_scales
                    .get(&lot.lot_id)
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        for (code, lot) in self.lots.iter().enumerate() {
            let timezone: Tz = lot.timezone.parse().map_err(|_| {
                ModelError::Corrupt(format!(
                    "lot {} has time zone {:?}",
                    lot.lot_id, lot.timezone
                ))
            })?;
            let holidays = calendars
                .entry(lot.holiday_region.clone())
                .or_insert_with(|| {
                    Arc::new(self.calendars.get(&lot.holiday_region).map_or_else(
                        || CalendarSource::embedded().load_or_empty(&lot.holiday_region),
                        HolidayCalendar::clone,
                    ))
                })
                .clone();
            let context = LotContext {
                lot_code: u32::try_from(code).ok(),
                kind_code: lot_kind_code(&lot.kind),
                timezone,
                holidays,
                has_sessions: lot.has_sessions,
                events: Arc::from(lot.events.clone()),
                tariffs: Arc::from(lot.tariffs.clone()),
            };
            let profile = LotProfile::new(
                WeekdayProfile::from_cells(
                    self.feature_params.step_minutes,
                    lot.profile_cells.iter().copied(),
                ),
                lot.fitted_until_ms,
            );
            lots.insert(lot.lot_id.clone(), (context, Arc::new(profile)));
        }
        Ok(LoadedModel {
            bundle: self,
            model,
            lots,
            interval_scales,
        })
    }
}

/// A model file ready to score.
pub struct LoadedModel {
    /// The file's contents.
    pub bundle: ModelBundle,
    model: SavedModel,
    lots: BTreeMap<String, (LotContext, Arc<LotProfile>)>,
    /// Per lot code, its interval scale per horizon (minutes).
    interval_scales: Vec<BTreeMap<u32, f64>>,
}

impl LoadedModel {
    /// A lot's backtest MAE of the rate at a horizon (minutes), if the model file has it.
    pub fn lot_backtest_mae(&self, lot_id: &str, horizon_minutes: u32) -> Option<f64> {
        self.bundle
            .lot_mae
            .get(lot_id)?
            .get(&horizon_minutes)
            .copied()
    }

    /// A lot's backtest MAE of the rate at a horizon (minutes) by day type and local hour of the
    /// target ([`crate::reference::reference_index`] order), if the model file has it.
    pub fn lot_hourly_mae(&self, lot_id: &str, horizon_minutes: u32) -> Option<&[f32]> {
        self.bundle
            .lot_hour_mae
            .get(lot_id)?
            .get(&horizon_minutes)
            .map(Vec::as_slice)
    }

    /// A lot's spread of daily backtest MAE at a horizon (minutes), if the model file has it.
    pub fn lot_error_spread(&self, lot_id: &str, horizon_minutes: u32) -> Option<f64> {
        self.bundle
            .lot_error_spread
            .get(lot_id)?
            .get(&horizon_minutes)
            .map(|spread| f64::from(*spread))
    }

    /// A lot's scale of residuals at a horizon (minutes): 1 where the file has none
    /// ([`ModelBundle::lot_interval_scales`]).
    pub fn lot_interval_scale(&self, lot_code: Option<u32>, horizon_minutes: u32) -> f64 {
        lot_code
            .and_then(|code| self.interval_scales.get(usize::try_from(code).ok()?))
            .and_then(|scales| scales.get(&horizon_minutes))
            .copied()
            .unwrap_or(1.0)
    }

    /// The forecaster.
    pub fn forecaster(&self) -> &dyn Forecaster {
        self.model.forecaster()
    }

    /// The model kind (`gbm`, `linear`).
    pub fn kind(&self) -> &'static str {
        self.model.kind()
    }

    /// A known lot's context and profile, for [`parkcast_features::vector::LotFeatureState`].
    pub fn lot(&self, lot_id: &str) -> Option<(&LotContext, &Arc<LotProfile>)> {
        self.lots
            .get(lot_id)
            .map(|(context, profile)| (context, profile))
    }

    /// The pooled calibration of a horizon (minutes): every residual, whatever its day.
    pub fn calibration(&self, horizon_minutes: u32) -> Option<&ResidualCalibration> {
        self.bundle.calibrations.get(&horizon_minutes)
    }

    /// The calibration of a horizon (minutes) for a target on `day_type`: the day type's own
    /// residuals where the model has enough of them, else the pooled ones; on a public `holiday`,
    /// the widest of them ([`calibration_of_day`], as the backtest chose).
    pub fn calibration_on(
        &self,
        horizon_minutes: u32,
        day_type: DayType,
        holiday: bool,
    ) -> Option<&ResidualCalibration> {
        let own = self
            .bundle
            .day_type_calibrations
            .get(&horizon_minutes)
            .map_or(&[][..], Vec::as_slice);
        let pooled = self.calibration(horizon_minutes)?;
        Some(calibration_of_day(pooled, own, day_type, holiday))
    }

    /// The calibration of a horizon (minutes) for a lot's target at `target_ms`: by the day type of
    /// the target's local date in the lot's calendar; pooled for a lot the model does not know.
    pub fn calibration_for(
        &self,
        lot_id: &str,
        horizon_minutes: u32,
        target_ms: i64,
    ) -> Option<&ResidualCalibration> {
        match self.lots.get(lot_id) {
            Some((context, _)) => {
                let date = context.local(target_ms).date();
                let holidays = &context.holidays;
                self.calibration_on(
                    horizon_minutes,
                    holidays.day_type(date),
                    holidays.is_holiday(date),
                )
            }
            None => self.calibration(horizon_minutes),
        }
    }

    /// How its intervals are calibrated: per day type of the target when the file has day-type
    /// residuals, else over every day.
    pub fn calibration_scope(&self) -> CalibrationScope {
        if self.bundle.day_type_calibrations.is_empty() {
            CalibrationScope::Pooled
        } else {
            CalibrationScope::DayType
        }
    }

    /// The grid step, minutes.
    pub fn step_minutes(&self) -> u32 {
        self.bundle.feature_params.step_minutes
    }

    /// The horizons forecast, minutes, ascending.
    pub fn horizons_minutes(&self) -> Vec<u32> {
        let mut minutes: Vec<u32> = self
            .bundle
            .horizons
            .iter()
            .map(|steps| steps * self.step_minutes())
            .collect();
        minutes.sort_unstable();
        minutes.dedup();
        minutes
    }

    /// An empty incremental feature state of a lot the model knows, with the model's context and
    /// fitted profile for it.
    pub fn new_state(&self, lot_id: &str) -> Option<LotFeatureState> {
        let (context, profile) = self.lot(lot_id)?;
        Some(LotFeatureState::new(
            self.bundle.feature_params,
            context.clone(),
            Arc::clone(profile),
        ))
    }

    /// The forecast of every horizon from the state's latest grid instant; `None` before the state
    /// has a value. Trainer and server both score through here.
    pub fn forecast(&self, state: &LotFeatureState) -> Option<LotForecast> {
        let origin_ms = state.now_ms()?;
        let step_ms = self.bundle.feature_params.step_ms();
        let mut horizons: Vec<u32> = self.bundle.horizons.clone();
        horizons.sort_unstable();
        horizons.dedup();
        let vectors: Vec<_> = horizons
            .iter()
            .map(|steps| state.vector(*steps))
            .collect::<Option<_>>()?;
        let capacity = vectors.first()?[index::CAPACITY];
        let rates = self.forecaster().predict(&vectors);
        let lot_code = state.context().lot_code;
        let horizons = horizons
            .iter()
            .zip(rates)
            .map(|(steps, rate)| {
                let horizon_minutes = steps * self.step_minutes();
                HorizonForecast {
                    horizon_minutes,
                    target_ms: origin_ms + i64::from(*steps) * step_ms,
                    rate,
                    interval_scale: IntervalScale::uniform(
                        self.lot_interval_scale(lot_code, horizon_minutes),
                    ),
                }
            })
            .collect();
        Some(LotForecast {
            origin_ms,
            capacity,
            horizons,
        })
    }
}

/// A lot's forecast from one origin.
#[derive(Debug, Clone, PartialEq)]
pub struct LotForecast {
    /// The origin grid instant, ms.
    pub origin_ms: i64,
    /// The lot's capacity at the origin.
    pub capacity: f64,
    /// One per horizon, ascending.
    pub horizons: Vec<HorizonForecast>,
}

/// The forecast of one horizon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HorizonForecast {
    /// The horizon, minutes.
    pub horizon_minutes: u32,
    /// The target instant, ms.
    pub target_ms: i64,
    /// The occupancy rate forecast, in [0, 1] (NaN where the model could not forecast).
    pub rate: f64,
    /// The factors its calibration's residuals are scaled by: the lot's scale
    /// ([`LoadedModel::lot_interval_scale`], from [`LoadedModel::forecast`]) times adaptive
    /// conformal inference's (`parkcast_features::conformal::AdaptiveScales`) for the target's
    /// class when the forecast was made, so every answer from it reads one distribution.
    pub interval_scale: IntervalScale,
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use parkcast_features::calendar::{CalendarFile, CalendarSource};
    use parkcast_features::vector::{FEATURE_COUNT, index};

    use super::*;
    use crate::model::{ForecasterParams, HorizonRows, LinearModel, LinearParams, TrainingSet};

    fn date(year: i32, month: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(year, month, day).expect("test dates should be valid")
    }

    fn tiny_model() -> LinearModel {
        let mut rows = HorizonRows::default();
        for row in 0..200 {
            let mut vector = [f64::NAN; FEATURE_COUNT];
            let x = f64::from(row % 17) / 17.0;
            vector[index::HORIZON_MINUTES] = 30.0;
            vector[index::RATE_ORIGIN] = 0.5;
            vector[index::PERSISTENCE_PLUS_PROFILE_CHANGE] = 0.4 + 0.2 * x;
            rows.features.push(vector);
            rows.targets.push(0.4 + 0.2 * x);
        }
        let data: TrainingSet = [(30, rows)].into_iter().collect();
        LinearParams::default().fit(&data).expect("fits")
    }

    fn lot(lot_id: &str, holiday_region: &str) -> BundleLot {
        BundleLot {
            lot_id: lot_id.to_owned(),
            kind: "garage".to_owned(),
            timezone: "Europe/London".to_owned(),
            holiday_region: holiday_region.to_owned(),
            has_sessions: false,
            events: Vec::new(),
            tariffs: Vec::new(),
            profile_cells: Vec::new(),
            fitted_until_ms: 0,
        }
    }

    fn bundle(calendars: BTreeMap<String, HolidayCalendar>) -> ModelBundle {
        ModelBundle {
            format: MODEL_FILE_FORMAT,
            feature_params: FeatureParams::new(30),
            horizons: vec![1],
            lots: vec![
                BundleLot {
                    tariffs: vec![HourlyTariff {
                        valid_from_ms: 0,
                        valid_until_ms: None,
                        band_starts_minute: 0,
                        band_ends_minute: 1_440,
                        weekdays: parkcast_features::vector::ALL_WEEKDAYS,
                        cents_per_hour: 250,
                        lot_own: false,
                    }],
                    ..lot("own", "XX-TEST")
                },
                lot("england", "GB-ENG"),
            ],
            calibrations: BTreeMap::new(),
            day_type_calibrations: BTreeMap::new(),
            model: SavedModel::Linear(tiny_model())
                .to_bytes()
                .expect("the model serializes"),
            calendars,
            lot_mae: BTreeMap::new(),
            lot_hour_mae: BTreeMap::new(),
            lot_error_spread: BTreeMap::new(),
            lot_interval_scales: BTreeMap::new(),
        }
    }

    /// The format 1 layout, as the previous build wrote it.
    #[derive(Serialize)]
    struct BundleV1<'a> {
        format: u32,
        feature_params: FeatureParams,
        horizons: &'a [u32],
        lots: &'a [BundleLot],
        calibrations: &'a BTreeMap<u32, ResidualCalibration>,
        model: &'a [u8],
    }

    #[test]
    fn the_model_file_carries_its_lots_calendars() {
        let file = CalendarFile::parse(
            "own.csv",
            "region,kind,first_day,last_day,name\n\
             XX-TEST,public,2024-12-25,,Christmas\n\
             XX-TEST,school,2024-10-21,2024-10-25,Autumn break\n\
             XX-TEST,school_coverage,2024-09-01,2025-07-31,School year\n"
                .as_bytes(),
        )
        .expect("parses");
        let source = CalendarSource::embedded()
            .with_file(&file)
            .expect("applies");
        let calendars: BTreeMap<String, HolidayCalendar> = ["XX-TEST", "GB-ENG"]
            .into_iter()
            .map(|region| {
                let calendar = source.load(region).expect("known region");
                (region.to_owned(), calendar)
            })
            .collect();
        let bytes = bundle(calendars.clone()).to_bytes().expect("encodes");
        let decoded = ModelBundle::from_bytes(&bytes).expect("decodes");
        assert_eq!(decoded.format, 2);
        assert_eq!(decoded.calendars, calendars);
        let loaded = decoded.load().expect("loads");
        let (own, _) = loaded.lot("own").expect("lot");
        assert!(own.holidays.is_holiday(date(2024, 12, 25)));
        assert!(own.holidays.is_school_holiday(date(2024, 10, 23)));
        assert_eq!(
            own.holidays.school_holiday_flag(date(2024, 11, 5)),
            Some(false)
        );
        // Its tariffs too: serving reads the price in force at a target as training did.
        assert_eq!(own.price_at(1_700_000_000_000), Some(250));
        let (england, _) = loaded.lot("england").expect("lot");
        assert!(england.holidays.is_school_holiday(date(2016, 12, 19)));
        assert_eq!(england.price_at(1_700_000_000_000), None);
    }

    #[test]
    fn intervals_read_the_calibration_of_the_targets_day_type() {
        let narrow = ResidualCalibration::fit([-0.01, 0.0, 0.01]).expect("residuals");
        let wide = ResidualCalibration::fit([-0.2, 0.0, 0.2]).expect("residuals");
        let mut with_days = bundle(BTreeMap::new());
        with_days.calibrations.insert(30, narrow.clone());
        with_days
            .day_type_calibrations
            .insert(30, vec![(DayType::Saturday, wide.clone())]);
        let bytes = with_days.to_bytes().expect("encodes");
        let loaded = ModelBundle::from_bytes(&bytes)
            .expect("decodes")
            .load()
            .expect("loads");
        // Noon in London, as ms since the epoch.
        let noon = |day: NaiveDate| {
            day.and_hms_opt(12, 0, 0)
                .expect("valid")
                .and_utc()
                .timestamp_millis()
        };
        let saturday = noon(date(2024, 12, 14));
        let monday = noon(date(2024, 12, 16));
        let christmas = noon(date(2024, 12, 25));
        assert_eq!(loaded.calibration_for("england", 30, saturday), Some(&wide));
        assert_eq!(loaded.calibration_for("england", 30, monday), Some(&narrow));
        // A holiday (Christmas, a Wednesday) is exchangeable with no class: the widest one.
        assert_eq!(
            loaded.calibration_for("england", 30, christmas),
            Some(&wide)
        );
        // A lot the model does not know, and a horizon it has no residuals for.
        assert_eq!(
            loaded.calibration_for("elsewhere", 30, saturday),
            Some(&narrow)
        );
        assert_eq!(loaded.calibration_for("england", 60, saturday), None);
    }

    #[test]
    fn each_lots_forecast_carries_its_interval_scale_and_a_bad_one_is_refused() {
        let mut scaled = bundle(BTreeMap::new());
        scaled.calibrations.insert(
            30,
            ResidualCalibration::fit([-0.02, 0.0, 0.02]).expect("residuals"),
        );
        scaled
            .lot_interval_scales
            .insert("england".to_owned(), [(30, 2.5)].into());
        let loaded = ModelBundle::from_bytes(&scaled.to_bytes().expect("encodes"))
            .expect("decodes")
            .load()
            .expect("loads");
        let forecast_of = |lot_id: &str| {
            let mut state = loaded.new_state(lot_id).expect("known lot");
            state.push_value(
                1_700_000_000_000 - 1_700_000_000_000 % 1_800_000,
                parkcast_features::grid::GridValue {
                    occupied: 50.0,
                    capacity: 100.0,
                },
            );
            loaded.forecast(&state).expect("forecasts")
        };
        let england = forecast_of("england");
        assert_eq!(
            england.horizons[0].interval_scale,
            IntervalScale::uniform(2.5)
        );
        // A lot without a scale of its own reads the calibration as it is.
        assert_eq!(
            forecast_of("own").horizons[0].interval_scale,
            IntervalScale::ONE
        );
        // The scale widens the lot's intervals and its distribution alike.
        let calibration = loaded.calibration(30).expect("calibrated");
        let (low, high) = calibration
            .scaled(england.horizons[0].interval_scale)
            .interval(0.5, 0.8);
        assert!((high - low - 2.0 * 2.5 * calibration.half_width(0.8)).abs() < 1e-12);

        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut corrupt = bundle(BTreeMap::new());
            corrupt
                .lot_interval_scales
                .insert("england".to_owned(), [(30, bad)].into());
            let error = ModelBundle::from_bytes(&corrupt.to_bytes().expect("encodes"))
                .err()
                .expect("refused");
            assert!(
                error
                    .to_string()
                    .contains("england's interval scale at 30 min"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_format_1_file_loads_with_the_embedded_calendars() {
        let current = bundle(BTreeMap::new());
        let old = BundleV1 {
            format: 1,
            feature_params: current.feature_params,
            horizons: &current.horizons,
            lots: &current.lots,
            calibrations: &current.calibrations,
            model: &current.model,
        };
        let bytes = pack(&old).expect("encodes");
        let decoded = ModelBundle::from_bytes(&bytes).expect("a format 1 file still reads");
        assert_eq!(decoded.format, 1);
        assert!(decoded.calendars.is_empty());
        let loaded = decoded.load().expect("loads");
        let (england, _) = loaded.lot("england").expect("lot");
        assert!(england.holidays.is_holiday(date(2016, 12, 26)));
        assert!(england.holidays.is_school_holiday(date(2016, 12, 19)));
        let (own, _) = loaded.lot("own").expect("lot");
        assert_eq!(
            own.holidays.public_holidays().count(),
            0,
            "a region the embedded data lacks gets no holidays, as before"
        );
    }

    #[test]
    fn formats_outside_the_readable_range_and_mismatched_calendars_are_refused() {
        let mut future = bundle(BTreeMap::new());
        future.format = MODEL_FILE_FORMAT + 1;
        let bytes = future.to_bytes().expect("encodes");
        assert!(matches!(
            ModelBundle::from_bytes(&bytes),
            Err(ModelError::Corrupt(_))
        ));
        let mut calendars = BTreeMap::new();
        calendars.insert("GB-ENG".to_owned(), HolidayCalendar::from_dates("FR", []));
        let bytes = bundle(calendars).to_bytes().expect("encodes");
        assert!(matches!(
            ModelBundle::from_bytes(&bytes),
            Err(ModelError::Corrupt(_))
        ));
    }
}
