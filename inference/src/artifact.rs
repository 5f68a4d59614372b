//! The model file (`model.bin`): everything serving needs to turn live state into forecasts with
//! exactly the training-time feature definitions.
//!
//! It holds the feature parameters (and so the schema hash), the lots the model knows with their
//! fitted profiles and contexts, the fitted model, and split-conformal residuals per horizon for the
//! intervals and probabilities. The body is MessagePack, gzipped: every f64 keeps its 8 bytes, so a
//! loaded model predicts bit for bit what the trained one did.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono_tz::Tz;
use parkcast_features::baseline::WeekdayProfile;
use parkcast_features::calendar::{HolidayCalendar, HolidayRegion};
use parkcast_features::conformal::ResidualCalibration;
use parkcast_features::vector::{
    FeatureParams, LotContext, LotFeatureState, LotProfile, ScheduledEvent, index, lot_kind_code,
};
use serde::{Deserialize, Serialize};

use crate::model::{Forecaster, ModelError, SavedModel, pack, unpack};

/// Version of the model file layout.
pub const MODEL_FILE_FORMAT: u32 = 1;

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
    /// The fitted model ([`SavedModel::to_bytes`]).
    pub model: Vec<u8>,
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
        if bundle.format != MODEL_FILE_FORMAT {
            return Err(ModelError::Corrupt(format!(
                "model file format {} (this build reads {MODEL_FILE_FORMAT})",
                bundle.format
            )));
        }
        bundle
            .feature_params
            .validate()
            .map_err(|error| corrupt(&error))?;
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
                    Arc::new(lot.holiday_region.parse::<HolidayRegion>().map_or_else(
                        |_| HolidayCalendar::from_dates(&lot.holiday_region, []),
                        |region| HolidayCalendar::load(&region),
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
        })
    }
}

/// A model file ready to score.
pub struct LoadedModel {
    /// The file's contents.
    pub bundle: ModelBundle,
    model: SavedModel,
    lots: BTreeMap<String, (LotContext, Arc<LotProfile>)>,
}

impl LoadedModel {
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

    /// The calibration of a horizon (minutes).
    pub fn calibration(&self, horizon_minutes: u32) -> Option<&ResidualCalibration> {
        self.bundle.calibrations.get(&horizon_minutes)
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
        let horizons = horizons
            .iter()
            .zip(rates)
            .map(|(steps, rate)| HorizonForecast {
                horizon_minutes: steps * self.step_minutes(),
                target_ms: origin_ms + i64::from(*steps) * step_ms,
                rate,
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
}
