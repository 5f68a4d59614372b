//! Scoring: live state through the shared incremental features into the active model, and a ready
//! answer per lot for every request.
//!
//! - **One feature path.** Live state samples each lot onto the model's grid
//!   ([`crate::live::GridRule`]); the grid values and session entries and exits feed a
//!   [`LotFeatureState`] (the code the trainer's parity test holds equal to its batch path), and the
//!   model scores it through [`LoadedModel::forecast`], the call the trainer's pricing view makes.
//!   Serving has no feature logic of its own.
//! - **Recomputed on change, debounced.** A scorer thread sleeps until ingestion has news (or the
//!   full refresh is due), runs at most one round per `debounce_ms`, takes what
//!   changed from ingestion in one short lock (pictures of changed lots, new grid values), and
//!   re-forecasts only the lots whose feature vector changed: a new grid value (once per grid
//!   step), or a session event that counts towards the newest grid instant (the session stream
//!   running behind the sensor stream); the picture changes with every event. Every `refresh_all_ms` all pictures are refreshed, since
//!   silence limits and flow windows move with time alone.
//! - **Requests read a ready answer.** Each lot's answer is an `Arc` behind its own lock, swapped
//!   whole; a request clones the `Arc` and never waits for ingestion or scoring. An answer carries
//!   the model that made it, so a request that started before a model swap finishes on the old
//!   model and never mixes the two.
//! - **Any target time by interpolation.** A model forecasts fixed horizons from its last grid
//!   instant; a request asks "now + h" or "at arrival". The answer interpolates linearly between
//!   the live reading now (known, no error) and the forecasts at the horizons' targets; the
//!   uncertainty between now and the first target is the first horizon's residuals scaled by the
//!   share of it elapsed ([`ResidualCalibration::scaled`]), between two targets the later one's.
//!   Scoring the model per request would cost a feature vector and a tree walk per target (the
//!   benchmark measures both); interpolation is a few multiplications on the ready forecast.
//! - **Hot reload.** [`Scoring::activate`] checks a model (schema hash, format, grid step, a smoke
//!   prediction on every lot with history), rebuilds the lots' feature states with the new model's
//!   profiles by replaying each lot's log of inputs in the order the old state took them, and
//!   swaps. A byte-identical model therefore answers bit-identically. A refused model changes
//!   nothing.
//! - **Warm copies of the other replicas' lots.** With replicas, the inputs a round takes from
//!   this replica's ingestion go to an [`InputSink`] (the group's inputs topic), and the inputs
//!   the other replicas took arrive through [`Scoring::take_standby`]: every replica's input log
//!   and feature state of every lot stay current, so a replica taking a lot over forecasts it
//!   from the history its old owner had ([`crate::standby`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use parkcast_features::conformal::{ADAPTIVE_COVERAGES, IntervalScale, ResidualCalibration};
use parkcast_features::grid::GridValue;
use parkcast_features::vector::LotFeatureState;
use parkcast_inference::artifact::{LoadedModel, LotForecast, ModelBundle};
use parkcast_inference::registry::Manifest;

use crate::live::{FeatureInput, GRID_HISTORY_MS, GridRule, LotChange, LotSnapshot};
use crate::metrics::ActivationOutcome;
use crate::quality::{
    Drifting, IssuedIntervals, LotReference, QualityConfig, QualityMonitor, WindowQuality,
};
use crate::topology::{LotIndex, TopologyIndex};

/// What the scorer reads from ingestion.
pub trait LiveSource: Send + Sync + 'static {
    /// The lots and slots served.
    fn topology(&self) -> &TopologyIndex;
    /// Samples lots onto this grid from now on.
    fn set_grid(&self, rule: Option<GridRule>);
    /// Appends what changed since the last call (every lot with `all`), pictures taken at `now_ms`
    /// (the stream's newest event time when `None`); returns the stream's newest event time.
    fn take_changes(&self, now_ms: Option<i64>, all: bool, out: &mut Vec<LotChange>)
    -> Option<i64>;
    /// Why all live data is stale (the broker is unreachable), if it is.
    fn stale_reason(&self) -> Option<String>;
    /// Whether ingestion has read everything it owns.
    fn caught_up(&self) -> bool;
    /// Blocks until the source has news after `seen` (a count of messages it applied) or
    /// `timeout` passes, and returns the count now. The scorer sleeps here instead of polling, so
    /// an idle server does no rounds but the periodic full refresh. A source that keeps no count
    /// (this default) always has news: the scorer then runs a round every debounce period.
    fn wait_for_news(&self, seen: u64, timeout: Duration) -> u64 {
        let _ = timeout;
        seen.wrapping_add(1)
    }
}

/// Where the forecast inputs this replica's ingestion produced go besides its own scorer: the
/// other replicas' warm copies ([`crate::standby`]).
pub trait InputSink: Send + Sync + 'static {
    /// The inputs of `lot` a round just applied, in order (only those from this replica's own
    /// ingestion; called under the scorer's lock, so it must not block).
    fn publish(&self, lot: LotIndex, inputs: &[FeatureInput]);
}

/// The time answers are computed at.
#[derive(Debug, Clone)]
pub enum Clock {
    /// The wall clock.
    Wall,
    /// The newest event time seen in the stream: replays of the past run on it (the demo).
    Stream(Arc<AtomicI64>),
    /// A fixed instant (tests).
    Fixed(i64),
}

impl Clock {
    /// A stream clock, starting unset.
    pub fn stream() -> Clock {
        Clock::Stream(Arc::new(AtomicI64::new(i64::MIN)))
    }

    /// A stream clock starting at `start_ms` (where a replay begins), until events move it on.
    pub fn stream_from(start_ms: i64) -> Clock {
        Clock::Stream(Arc::new(AtomicI64::new(start_ms)))
    }

    /// Now, ms (a stream clock before its first event reads the wall clock).
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::Wall => parkcast_kafka::now_ms(),
            Clock::Stream(newest) => match newest.load(Ordering::Relaxed) {
                i64::MIN => parkcast_kafka::now_ms(),
                newest => newest,
            },
            Clock::Fixed(now) => *now,
        }
    }

    /// The instant pictures are taken at, for [`LiveSource::take_changes`].
    fn picture_ms(&self) -> Option<i64> {
        match self {
            Clock::Stream(_) => None,
            other => Some(other.now_ms()),
        }
    }

    fn observe_stream(&self, newest_ms: Option<i64>) {
        if let (Clock::Stream(clock), Some(newest)) = (self, newest_ms) {
            clock.fetch_max(newest, Ordering::Relaxed);
        }
    }
}

/// Errors of scoring and model activation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScoringError {
    /// The model file does not decode or fails its own checks.
    #[error("model {name} v{version} is corrupt: {reason}")]
    Corrupt {
        /// The model line.
        name: String,
        /// The version.
        version: u32,
        /// What is wrong.
        reason: String,
    },
    /// The model was trained on other feature definitions than this build computes.
    #[error(
        "model {name} v{version} was trained on feature schema {found}, this server computes {expected}"
    )]
    Schema {
        /// The model line.
        name: String,
        /// The version.
        version: u32,
        /// This build's schema hash.
        expected: String,
        /// The model's.
        found: String,
    },
    /// The model's grid step differs from the grid the server samples lots on.
    #[error(
        "model {name} v{version} forecasts on a {found}-minute grid; this server samples lots every {expected} minutes (restart it to change the grid)"
    )]
    Step {
        /// The model line.
        name: String,
        /// The version.
        version: u32,
        /// The server's step.
        expected: u32,
        /// The model's.
        found: u32,
    },
    /// The smoke prediction failed.
    #[error("model {name} v{version} failed its smoke prediction: {reason}")]
    Smoke {
        /// The model line.
        name: String,
        /// The version.
        version: u32,
        /// What went wrong.
        reason: String,
    },
    /// A candidate cannot be shadowed before a model is active (the grid is the active model's).
    #[error("model {name} v{version} cannot be shadowed: no model is active yet")]
    NoActiveModel {
        /// The model line.
        name: String,
        /// The version.
        version: u32,
    },
}

impl ScoringError {
    /// The activation outcome it counts as.
    pub fn outcome(&self) -> ActivationOutcome {
        match self {
            ScoringError::Corrupt { .. } => ActivationOutcome::Corrupt,
            ScoringError::Schema { .. } => ActivationOutcome::Schema,
            ScoringError::Step { .. } => ActivationOutcome::Step,
            ScoringError::Smoke { .. } => ActivationOutcome::Smoke,
            ScoringError::NoActiveModel { .. } => ActivationOutcome::ServerError,
        }
    }
}

/// A model version ready to serve.
pub struct ServedModel {
    /// Its manifest.
    pub manifest: Manifest,
    /// The loaded model.
    pub model: LoadedModel,
    /// The longest horizon, minutes.
    pub max_horizon_minutes: u32,
}

impl std::fmt::Debug for ServedModel {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ServedModel")
            .field("name", &self.manifest.card.name)
            .field("version", &self.manifest.version)
            .finish()
    }
}

impl ServedModel {
    /// Decodes a model file whose bytes were verified against `manifest` (size and checksum, as
    /// [`parkcast_inference::registry::Registry::load`] does), and checks its format and that its
    /// feature schema is this build's.
    pub fn decode(manifest: Manifest, bytes: &[u8]) -> Result<ServedModel, ScoringError> {
        let corrupt = |reason: String| ScoringError::Corrupt {
            name: manifest.card.name.clone(),
            version: manifest.version,
            reason,
        };
        let bundle = ModelBundle::from_bytes(bytes).map_err(|error| corrupt(error.to_string()))?;
        let expected = bundle.feature_params.schema_hash();
        if !expected.eq_ignore_ascii_case(&manifest.card.feature_schema_hash) {
            return Err(ScoringError::Schema {
                name: manifest.card.name.clone(),
                version: manifest.version,
                expected,
                found: manifest.card.feature_schema_hash.clone(),
            });
        }
        let model = bundle.load().map_err(|error| corrupt(error.to_string()))?;
        let max_horizon_minutes = model.horizons_minutes().last().copied().unwrap_or(0);
        if max_horizon_minutes == 0 {
            return Err(corrupt("the model forecasts no horizon".to_owned()));
        }
        Ok(ServedModel {
            manifest,
            model,
            max_horizon_minutes,
        })
    }

    /// The model line and version, for logs.
    pub fn label(&self) -> String {
        format!("{} v{}", self.manifest.card.name, self.manifest.version)
    }
}

/// One lot's ready answer.
#[derive(Debug, Clone, Default)]
pub struct LotAnswer {
    /// The live picture when last refreshed (none before the lot's first event or refresh).
    pub snapshot: Option<LotSnapshot>,
    /// When the picture was taken, ms.
    pub snapshot_ms: i64,
    /// The forecast of the active model (none without a model or grid history).
    pub forecast: Option<Arc<LotForecast>>,
    /// The model that made the forecast.
    pub model: Option<Arc<ServedModel>>,
}

impl LotAnswer {
    /// The lot's newest event time, if it has seen any.
    pub fn newest_event_ms(&self) -> Option<i64> {
        self.snapshot.as_ref()?.newest_event_ms
    }

    /// Age of the newest event at `now_ms` (none before any event).
    pub fn data_age_ms(&self, now_ms: i64) -> Option<i64> {
        self.newest_event_ms()
            .map(|newest| now_ms.saturating_sub(newest).max(0))
    }
}

/// A forecast at one target time, with its uncertainty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointForecast {
    /// Expected occupancy rate.
    pub rate: f64,
    /// 80% interval of the rate.
    pub interval_80: (f64, f64),
    /// 95% interval of the rate.
    pub interval_95: (f64, f64),
    /// P(at least one free slot).
    pub probability_any_free: f64,
    /// P(occupancy >= 80%).
    pub probability_at_least_80: f64,
    /// P(occupancy < 60%).
    pub probability_below_60: f64,
}

/// The forecast at `target_ms`, interpolated between the live rate at `now_ms` (if known) and the
/// model's horizon forecasts after now. `None` when no horizon's target lies after now (the
/// forecast is older than its longest horizon) or a horizon lacks calibration.
pub fn forecast_at<'a>(
    calibration_of: impl Fn(u32) -> Option<&'a ResidualCalibration>,
    forecast: &LotForecast,
    now: Option<(i64, f64)>,
    target_ms: i64,
) -> Option<PointForecast> {
    forecast_at_scaled(calibration_of, forecast, now, target_ms, 1.0)
}

/// [`forecast_at`] with demand scaled by `demand_factor` (a what-if price's): the expected rate is
/// multiplied by it (at most full), and the intervals and probabilities come from the same
/// calibrated distribution around the scaled rate.
pub fn forecast_at_scaled<'a>(
    calibration_of: impl Fn(u32) -> Option<&'a ResidualCalibration>,
    forecast: &LotForecast,
    now: Option<(i64, f64)>,
    target_ms: i64,
    demand_factor: f64,
) -> Option<PointForecast> {
    let now_ms = now.map_or(i64::MIN, |(now_ms, _)| now_ms);
    let ahead: Vec<_> = forecast
        .horizons
        .iter()
        .filter(|horizon| horizon.target_ms > now_ms && horizon.rate.is_finite())
        .collect();
    let last = *ahead.last()?;
    let next = ahead
        .iter()
        .position(|horizon| horizon.target_ms >= target_ms);
    let (rate, calibration, scale) = match next {
        None => (
            last.rate,
            calibration_of(last.horizon_minutes)?,
            last.interval_scale,
        ),
        Some(position) => {
            let upper = ahead[position];
            let calibration = calibration_of(upper.horizon_minutes)?;
            let lower = match position {
                0 => now.map(|(now_ms, rate)| (now_ms, rate, true)),
                _ => Some((
                    ahead[position - 1].target_ms,
                    ahead[position - 1].rate,
                    false,
                )),
            };
            // The horizon's adaptive scale, shrunk with the share of the horizon elapsed when the
            // span starts at the live reading.
            match lower {
                None => (upper.rate, calibration, upper.interval_scale),
                Some((lower_ms, lower_rate, is_now)) => {
                    let span = (upper.target_ms - lower_ms).max(1) as f64;
                    let share = ((target_ms - lower_ms) as f64 / span).clamp(0.0, 1.0);
                    let rate = lower_rate + (upper.rate - lower_rate) * share;
                    let elapsed = if is_now { share } else { 1.0 };
                    (rate, calibration, upper.interval_scale.times(elapsed))
                }
            }
        }
    };
    Some(point(
        calibration,
        rate * demand_factor,
        scale,
        forecast.capacity,
    ))
}

fn point(
    calibration: &ResidualCalibration,
    rate: f64,
    scale: IntervalScale,
    capacity: f64,
) -> PointForecast {
    let scaled = calibration.scaled(scale);
    let rate = rate.clamp(0.0, 1.0);
    PointForecast {
        rate,
        interval_80: scaled.interval(rate, 0.8),
        interval_95: scaled.interval(rate, 0.95),
        probability_any_free: scaled.probability_free_slot(rate, capacity),
        probability_at_least_80: scaled.probability_at_least(rate, 0.8),
        probability_below_60: scaled.probability_below(rate, 0.6),
    }
}

/// Scorer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    /// How often changes are taken from ingestion and answers refreshed, ms: the debounce. The
    /// produce-to-visible delay is at most this plus ingestion's own.
    pub debounce_ms: u64,
    /// How often every lot's picture is refreshed even without events, ms.
    pub refresh_all_ms: u64,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            debounce_ms: 20,
            refresh_all_ms: 1_000,
        }
    }
}

/// One input of a lot's feature state, as it was applied.
#[derive(Debug, Clone, Copy)]
enum Applied {
    /// A grid value (a later one of the same instant replaces the earlier).
    Grid(i64, GridValue),
    /// A session entry.
    Arrival(i64),
    /// A session exit.
    Departure(i64),
}

impl Applied {
    fn at_ms(self) -> i64 {
        match self {
            Applied::Grid(at, _) | Applied::Arrival(at) | Applied::Departure(at) => at,
        }
    }

    /// Feeds it to a state; returns whether it changed the state's current feature vector (a grid
    /// value always may; a session event only when it counts towards the latest grid instant or
    /// before, which happens when the session stream runs behind the sensor stream).
    fn apply(self, state: &mut LotFeatureState) -> bool {
        match self {
            Applied::Grid(instant_ms, value) => {
                state.push_value(instant_ms, value);
                true
            }
            Applied::Arrival(at) | Applied::Departure(at) => {
                // `at` at or before a grid instant counts towards that instant or an earlier one.
                let counted = if matches!(self, Applied::Arrival(_)) {
                    state.push_arrival(at)
                } else {
                    state.push_departure(at)
                };
                counted && state.now_ms().is_some_and(|origin| at <= origin)
            }
        }
    }
}

/// One lot's feature inputs, independent of any model: what a new model's feature state is rebuilt
/// from on activation.
///
/// It is the log of the inputs in the order they were applied, a replaced grid value included,
/// not a tidied series: the feature state keeps running sums (each day's deviations), and floating
/// point gives `sum + old - old + new` and `sum + new` different last bits, which a tree's split can
/// turn into a visibly different forecast. Replaying the log applies the very same operations, so
/// activating a byte-identical model rebuilds a bit-identical state. Inputs older than
/// [`GRID_HISTORY_MS`] behind the newest grid instant leave the log: the features look back eight
/// days, so what they changed is no longer read.
#[derive(Debug, Clone, Default)]
struct LotHistory {
    inputs: VecDeque<Applied>,
    newest_grid_ms: Option<i64>,
}

impl LotHistory {
    fn push(&mut self, input: Applied) {
        if let Applied::Grid(instant_ms, _) = input {
            self.newest_grid_ms = Some(
                self.newest_grid_ms
                    .map_or(instant_ms, |newest| newest.max(instant_ms)),
            );
        }
        self.inputs.push_back(input);
        let oldest = self
            .newest_grid_ms
            .map_or(i64::MIN, |newest| newest - GRID_HISTORY_MS);
        while self
            .inputs
            .front()
            .is_some_and(|input| input.at_ms() < oldest)
        {
            self.inputs.pop_front();
        }
    }

    fn has_grid(&self) -> bool {
        self.newest_grid_ms.is_some()
    }

    fn replay_into(&self, state: &mut LotFeatureState) {
        for input in &self.inputs {
            input.apply(state);
        }
    }
}

#[derive(Default)]
struct LotScoring {
    history: LotHistory,
    state: Option<LotFeatureState>,
    forecast: Option<Arc<LotForecast>>,
    /// Whether the grid advanced since the last forecast.
    stale_forecast: bool,
    /// The newest session event time applied from this replica's ingestion and from the other
    /// replicas' (indexed by [`Origin`]).
    session_marks: [Option<i64>; 2],
}

/// Where an input came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// This replica's ingestion.
    Own = 0,
    /// Another replica's, through the inputs topic.
    Standby = 1,
}

impl LotScoring {
    /// Whether to apply `input` from `origin`. A grid value always (a later value of an instant
    /// replaces the earlier, so one taken twice changes nothing). A session event is counted
    /// once: at a handover the new owner replays the partition from its checkpoint, and the
    /// entries and exits it finds again are those the old owner already published; so an event
    /// from one origin at or before the newest event applied from the other is a replay, and
    /// dropped. (A session event that really arrives that late at a handover is lost: the price
    /// of counting none twice.)
    fn admits(&mut self, input: Applied, origin: Origin) -> bool {
        let (Applied::Arrival(at) | Applied::Departure(at)) = input else {
            return true;
        };
        let other = match origin {
            Origin::Own => Origin::Standby,
            Origin::Standby => Origin::Own,
        };
        if self.session_marks[other as usize].is_some_and(|mark| at <= mark) {
            return false;
        }
        let mark = &mut self.session_marks[origin as usize];
        *mark = Some(mark.map_or(at, |newest| newest.max(at)));
        true
    }
}

/// A candidate model scored beside the active one on the same live inputs, through the same code,
/// and never served: its own feature states (its profiles differ), forecasts and live accuracy.
struct Shadow {
    model: Arc<ServedModel>,
    states: Vec<Option<LotFeatureState>>,
    /// Per lot: whether its inputs changed since its last forecast.
    stale: Vec<bool>,
    quality: QualityMonitor,
    /// The active model's live accuracy since the shadow started: the same period as the
    /// candidate's, which the active model's own monitor (a day, from its activation) is not.
    active_quality: QualityMonitor,
}

/// The live accuracy of the candidate in shadow ([`Scoring::shadow_quality`]).
#[derive(Debug, Clone)]
pub struct ShadowReport {
    /// The candidate.
    pub model: Arc<ServedModel>,
    /// Its live accuracy per horizon and window.
    pub summary: Vec<WindowQuality>,
    /// What drifts, judged as for the active model.
    pub drifting: Vec<Drifting>,
    /// The active model's live accuracy over the same period: since the shadow started.
    pub active_summary: Vec<WindowQuality>,
}

impl Core {
    /// Applies one input of lot `index` from `origin` to its log, its feature states and live
    /// accuracy; false if it was a replay, dropped ([`LotScoring::admits`]).
    fn feed(&mut self, index: usize, input: Applied, origin: Origin) -> bool {
        let Some(scoring) = self.lots.get_mut(index) else {
            return false;
        };
        if !scoring.admits(input, origin) {
            return false;
        }
        apply_input(scoring, input);
        let actual = match input {
            Applied::Grid(instant_ms, value) if value.capacity > 0.0 => {
                Some((instant_ms, value.rate()))
            }
            _ => None,
        };
        if let (Some((instant_ms, rate)), Some(quality)) = (actual, &mut self.quality) {
            quality.observe(index, instant_ms, rate);
        }
        if let Some(shadow) = &mut self.shadow {
            if let Some((instant_ms, rate)) = actual {
                shadow.active_quality.observe(index, instant_ms, rate);
            }
            if let Some(state) = &mut shadow.states[index]
                && input.apply(state)
            {
                shadow.stale[index] = true;
            }
            if let Some((instant_ms, rate)) = actual {
                shadow.quality.observe(index, instant_ms, rate);
            }
        }
        true
    }
}

/// A model's feature states rebuilt from every lot's input log, their first forecasts (checked),
/// and a live-accuracy monitor holding them.
struct Prepared {
    states: Vec<Option<LotFeatureState>>,
    forecasts: Vec<Option<Arc<LotForecast>>>,
    quality: QualityMonitor,
    smoked: usize,
}

struct Core {
    lots: Vec<LotScoring>,
    model: Option<Arc<ServedModel>>,
    /// The active model's live accuracy (restarts with each model).
    quality: Option<QualityMonitor>,
    /// The candidate in shadow, if any.
    shadow: Option<Shadow>,
    /// When live accuracy was last published, and the drift it found.
    last_quality_report: Option<Instant>,
    drifting: Vec<Drifting>,
    /// The grid lots are sampled on, minutes (fixed by the first model).
    step_minutes: Option<u32>,
    changes: Vec<LotChange>,
    last_full_refresh: Option<Instant>,
    /// Inputs of this round that went to the feature states, for the sink.
    published: Vec<FeatureInput>,
}

/// The scorer and the answers it keeps ready.
pub struct Scoring {
    source: Arc<dyn LiveSource>,
    clock: Clock,
    config: ScoringConfig,
    quality_config: QualityConfig,
    core: Mutex<Core>,
    answers: Vec<RwLock<Arc<LotAnswer>>>,
    model: RwLock<Option<Arc<ServedModel>>>,
    /// Announces lots whose answer changed; taken on [`Scoring::close`].
    updates: RwLock<Option<tokio::sync::broadcast::Sender<LotIndex>>>,
    metrics: Option<crate::metrics::ServingMetrics>,
    /// Where this replica's inputs go for the others' warm copies.
    sink: Option<Arc<dyn InputSink>>,
    /// The other replicas' inputs, until the next round applies them.
    standby: Mutex<Vec<(LotIndex, Vec<FeatureInput>)>>,
}

impl std::fmt::Debug for Scoring {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Scoring")
            .field("model", &self.model())
            .finish()
    }
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(PoisonError::into_inner).clone()
}

fn write<T>(lock: &RwLock<T>, value: T) {
    *lock.write().unwrap_or_else(PoisonError::into_inner) = value;
}

impl Scoring {
    /// A scorer over a live source, without a model yet.
    pub fn new(source: Arc<dyn LiveSource>, clock: Clock, config: ScoringConfig) -> Scoring {
        let lot_count = source.topology().lots().len();
        let (updates, _) = tokio::sync::broadcast::channel(lot_count.clamp(64, 65_536));
        Scoring {
            core: Mutex::new(Core {
                lots: (0..lot_count).map(|_| LotScoring::default()).collect(),
                model: None,
                quality: None,
                shadow: None,
                last_quality_report: None,
                drifting: Vec::new(),
                step_minutes: None,
                changes: Vec::new(),
                last_full_refresh: None,
                published: Vec::new(),
            }),
            answers: (0..lot_count)
                .map(|_| RwLock::new(Arc::new(LotAnswer::default())))
                .collect(),
            model: RwLock::new(None),
            source,
            clock,
            config,
            quality_config: QualityConfig::default(),
            updates: RwLock::new(Some(updates)),
            metrics: None,
            sink: None,
            standby: Mutex::new(Vec::new()),
        }
    }

    /// The same, sending the inputs its own ingestion produces to `sink` (replicas).
    pub fn with_sink(mut self, sink: Arc<dyn InputSink>) -> Scoring {
        self.sink = Some(sink);
        self
    }

    /// Queues inputs another replica took for `lot`; the next round applies them to the lot's log
    /// and feature states (and live accuracy) as its own, but for session events already counted.
    pub fn take_standby(&self, lot: LotIndex, inputs: Vec<FeatureInput>) {
        if (lot as usize) < self.answers.len() && !inputs.is_empty() {
            self.standby
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((lot, inputs));
        }
    }

    /// The same, judging live accuracy with `config` from the next model activated on.
    pub fn with_quality(mut self, config: QualityConfig) -> Scoring {
        self.quality_config = config;
        self
    }

    /// The active model's live accuracy per horizon over the last hour and day, and the lots (and
    /// the city) drifting, at the scorer's clock; `None` before a model is active.
    pub fn quality(&self) -> Option<(Vec<WindowQuality>, Vec<Drifting>)> {
        let now_ms = self.clock.now_ms();
        let core = self.core();
        let quality = core.quality.as_ref()?;
        Some((quality.summary(now_ms), quality.drift(now_ms)))
    }

    /// What the last live-accuracy report found drifting (every 10 s; empty before a model).
    pub fn drifting(&self) -> Vec<Drifting> {
        self.core().drifting.clone()
    }

    /// The same, reporting round times and forecast age.
    pub fn with_metrics(mut self, metrics: crate::metrics::ServingMetrics) -> Scoring {
        self.metrics = Some(metrics);
        self
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lot `lot`'s grid values from `since_ms` on, in time order (the last value of an instant
    /// wins, as in the features): the actual occupancy the operations page draws. The log holds
    /// the features' history (a little over a week).
    pub fn recent_grid(&self, lot: LotIndex, since_ms: i64) -> Vec<(i64, GridValue)> {
        let core = self.core();
        let Some(scoring) = core.lots.get(lot as usize) else {
            return Vec::new();
        };
        let mut values = std::collections::BTreeMap::new();
        for input in &scoring.history.inputs {
            if let Applied::Grid(instant_ms, value) = *input
                && instant_ms >= since_ms
            {
                values.insert(instant_ms, value);
            }
        }
        values.into_iter().collect()
    }

    /// The lots and slots served.
    pub fn topology(&self) -> &TopologyIndex {
        self.source.topology()
    }

    /// Now, by the scorer's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The active model.
    pub fn model(&self) -> Option<Arc<ServedModel>> {
        read(&self.model)
    }

    /// A lot's ready answer.
    pub fn answer(&self, lot: LotIndex) -> Arc<LotAnswer> {
        self.answers
            .get(lot as usize)
            .map_or_else(|| Arc::new(LotAnswer::default()), read)
    }

    /// Lots whose answer changed, as they change (a receiver that falls behind gets `Lagged` and
    /// should re-read every lot it follows).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<LotIndex> {
        match read(&self.updates) {
            Some(updates) => updates.subscribe(),
            // Closed: a receiver that reports `Closed` at once.
            None => tokio::sync::broadcast::channel(1).0.subscribe(),
        }
    }

    /// Ends every subscription (watch streams end), for shutdown.
    pub fn close(&self) {
        write(&self.updates, None);
    }

    fn announce(&self, lot: LotIndex) {
        if let Some(updates) = self
            .updates
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            let _ = updates.send(lot);
        }
    }

    /// Why all live data is stale, if it is.
    pub fn stale_reason(&self) -> Option<String> {
        self.source.stale_reason()
    }

    /// Ready to serve: a model is active and ingestion has caught up.
    pub fn ready(&self) -> bool {
        self.model().is_some() && self.source.caught_up()
    }

    /// Whether any lot has grid history (seeded or live).
    pub fn has_history(&self) -> bool {
        self.core().lots.iter().any(|lot| lot.history.has_grid())
    }

    /// Seeds a lot's grid history (from the warehouse, before the live stream takes over): grid
    /// values on the model's grid, and session entry and exit times. Returns false for a lot not
    /// served.
    pub fn seed(
        &self,
        lot_id: &str,
        grid: impl IntoIterator<Item = (i64, GridValue)>,
        arrivals: impl IntoIterator<Item = i64>,
        departures: impl IntoIterator<Item = i64>,
    ) -> bool {
        let Some(lot) = self.topology().lot(lot_id) else {
            return false;
        };
        let mut arrivals: Vec<i64> = arrivals.into_iter().collect();
        let mut departures: Vec<i64> = departures.into_iter().collect();
        arrivals.sort_unstable();
        departures.sort_unstable();
        let inputs = grid
            .into_iter()
            .map(|(instant, value)| Applied::Grid(instant, value))
            .chain(arrivals.into_iter().map(Applied::Arrival))
            .chain(departures.into_iter().map(Applied::Departure));
        let mut core = self.core();
        let scoring = &mut core.lots[lot as usize];
        for input in inputs {
            apply_input(scoring, input);
        }
        scoring.stale_forecast = true;
        true
    }

    /// Checks a model and makes it the active one: its feature states are rebuilt from each lot's
    /// input log and every lot is forecast (the smoke prediction: a forecast that is not a
    /// finite rate in [0, 1] refuses the model). Answers switch lot by lot to the new model; a
    /// refused model leaves everything as it was.
    pub fn activate(&self, served: ServedModel) -> Result<Arc<ServedModel>, ScoringError> {
        let mut guard = self.core();
        let core = &mut *guard;
        if let Some(expected) = core.step_minutes {
            check_step(&served, expected)?;
        }
        let step = served.model.step_minutes();
        let served = Arc::new(served);
        let Prepared {
            states,
            forecasts,
            quality,
            smoked,
        } = self.prepare(core, &served)?;
        for ((scoring, state), forecast) in core.lots.iter_mut().zip(states).zip(forecasts) {
            scoring.state = state;
            scoring.forecast = forecast;
            scoring.stale_forecast = false;
        }
        if core
            .shadow
            .as_ref()
            .is_some_and(|shadow| shadow.model.label() == served.label())
        {
            // The candidate is now the model answering.
            core.shadow = None;
        }
        if core.shadow.is_some() {
            // Another model answers now: the comparison starts again beside it, from the
            // candidate's next forecasts.
            let active_quality = self.monitor_of_answers(core, &served);
            let lot_ids = self.topology().lot_ids();
            if let Some(shadow) = &mut core.shadow {
                shadow.active_quality = active_quality;
                shadow.quality = quality_monitor(&shadow.model, &lot_ids, self.quality_config);
                shadow.stale.fill(true);
            }
        }
        core.quality = Some(quality);
        core.model = Some(Arc::clone(&served));
        if core.step_minutes.is_none() {
            core.step_minutes = Some(step);
            self.source.set_grid(Some(GridRule {
                step_ms: i64::from(step) * 60_000,
            }));
        }
        write(&self.model, Some(Arc::clone(&served)));
        for (index, scoring) in core.lots.iter().enumerate() {
            let previous = read(&self.answers[index]);
            write(
                &self.answers[index],
                Arc::new(LotAnswer {
                    forecast: scoring.forecast.clone(),
                    model: Some(Arc::clone(&served)),
                    ..(*previous).clone()
                }),
            );
            if let Ok(lot) = LotIndex::try_from(index) {
                self.announce(lot);
            }
        }
        tracing::info!(
            model = %served.label(),
            lots_forecast = smoked,
            "model activated"
        );
        Ok(served)
    }

    /// Rebuilds `served`'s feature state of every lot from its input log, forecasts every lot with
    /// history (the smoke prediction: a forecast that is not a finite rate in [0, 1] refuses the
    /// model) and starts its live-accuracy monitor with those forecasts.
    fn prepare(&self, core: &Core, served: &Arc<ServedModel>) -> Result<Prepared, ScoringError> {
        let mut states = Vec::with_capacity(core.lots.len());
        let mut forecasts = Vec::with_capacity(core.lots.len());
        let mut smoked = 0usize;
        let lot_ids = self.topology().lot_ids();
        let mut quality = quality_monitor(served, &lot_ids, self.quality_config);
        if let Some(active) = &core.quality {
            quality.inherit_adaptive(active);
        }
        for (index, lot) in self.topology().lots().iter().enumerate() {
            let state = served.model.new_state(&lot.lot_id).map(|mut state| {
                core.lots[index].history.replay_into(&mut state);
                state
            });
            let forecast = state
                .as_ref()
                .and_then(|state| served.model.forecast(state));
            if let Some(mut forecast) = forecast {
                check_forecast(served, &forecast)?;
                smoked += 1;
                quality.adapt(index, &mut forecast);
                issue_forecast(&mut quality, served, index, lot_ids[index], &forecast);
                forecasts.push(Some(Arc::new(forecast)));
            } else {
                forecasts.push(None);
            }
            states.push(state);
        }
        if smoked == 0 {
            smoke_without_history(served)?;
        }
        Ok(Prepared {
            states,
            forecasts,
            quality,
            smoked,
        })
    }

    /// A live-accuracy monitor of `served` holding the forecasts the lots answer with now.
    fn monitor_of_answers(&self, core: &Core, served: &ServedModel) -> QualityMonitor {
        let lot_ids = self.topology().lot_ids();
        let mut monitor = quality_monitor(served, &lot_ids, self.quality_config);
        for (index, lot) in core.lots.iter().enumerate() {
            if let Some(forecast) = &lot.forecast {
                issue_forecast(&mut monitor, served, index, lot_ids[index], forecast);
            }
        }
        monitor
    }

    /// Loads a candidate beside the active model: the same checks as [`Scoring::activate`], its
    /// feature states rebuilt from the same input logs, then every round feeds it the same inputs
    /// and scores its forecasts on the same actuals, through the same code; its answers are never
    /// served. Replaces any earlier candidate. Needs an active model, whose grid it must share.
    pub fn shadow(&self, served: ServedModel) -> Result<Arc<ServedModel>, ScoringError> {
        let mut guard = self.core();
        let core = &mut *guard;
        let Some(expected) = core.step_minutes else {
            return Err(ScoringError::NoActiveModel {
                name: served.manifest.card.name.clone(),
                version: served.manifest.version,
            });
        };
        check_step(&served, expected)?;
        let served = Arc::new(served);
        let Prepared {
            states,
            quality,
            smoked,
            ..
        } = self.prepare(core, &served)?;
        let active_quality = match &core.model {
            Some(active) => self.monitor_of_answers(core, active),
            // Unreachable: the grid step above comes from an active model.
            None => quality.clone(),
        };
        core.shadow = Some(Shadow {
            model: Arc::clone(&served),
            stale: vec![false; states.len()],
            states,
            quality,
            active_quality,
        });
        tracing::info!(
            model = %served.label(),
            lots_forecast = smoked,
            "candidate in shadow"
        );
        Ok(served)
    }

    /// Stops shadowing; returns the candidate that was in shadow.
    pub fn clear_shadow(&self) -> Option<Arc<ServedModel>> {
        let shadow = self.core().shadow.take()?;
        tracing::info!(model = %shadow.model.label(), "shadow cleared");
        Some(shadow.model)
    }

    /// The candidate in shadow, with its live accuracy and drift as [`Scoring::quality`] reports
    /// the active model's, and the active model's live accuracy over the same period (since the
    /// shadow started).
    pub fn shadow_quality(&self) -> Option<ShadowReport> {
        let now_ms = self.clock.now_ms();
        let core = self.core();
        let shadow = core.shadow.as_ref()?;
        Some(ShadowReport {
            model: Arc::clone(&shadow.model),
            summary: shadow.quality.summary(now_ms),
            drifting: shadow.quality.drift(now_ms),
            active_summary: shadow.active_quality.summary(now_ms),
        })
    }

    /// One round: takes the changes from ingestion, feeds new grid values to the feature states,
    /// re-forecasts the lots whose grid advanced and publishes their answers. Returns the lots
    /// updated.
    pub fn tick(&self) -> usize {
        let started = Instant::now();
        let mut guard = self.core();
        let core = &mut *guard;
        let all = core
            .last_full_refresh
            .is_none_or(|at| at.elapsed() >= Duration::from_millis(self.config.refresh_all_ms));
        if all {
            core.last_full_refresh = Some(Instant::now());
        }
        let picture_ms = self.clock.picture_ms();
        let mut changes = std::mem::take(&mut core.changes);
        let newest = self.source.take_changes(picture_ms, all, &mut changes);
        let taken = started.elapsed();
        let mut forecasts = 0usize;
        self.clock.observe_stream(newest);
        let snapshot_ms = picture_ms.or(newest).unwrap_or_else(|| self.clock.now_ms());
        let model = core.model.clone();
        let updated = changes.len();
        // The other replicas' inputs first: an owner's replay of what they already published
        // then finds its session events counted.
        let standby =
            std::mem::take(&mut *self.standby.lock().unwrap_or_else(PoisonError::into_inner));
        let mut replays = 0u64;
        for (lot, inputs) in standby {
            for input in inputs {
                if !core.feed(lot as usize, applied(input), Origin::Standby) {
                    replays += 1;
                }
            }
        }
        let mut published = std::mem::take(&mut core.published);
        for change in changes.drain(..) {
            let index = change.lot as usize;
            if index >= core.lots.len() {
                continue;
            }
            published.clear();
            for input in &change.inputs {
                if core.feed(index, applied(*input), Origin::Own) {
                    published.push(*input);
                } else {
                    replays += 1;
                }
            }
            if let Some(sink) = self.sink.as_ref().filter(|_| !published.is_empty()) {
                sink.publish(change.lot, &published);
            }
            let scoring = &mut core.lots[index];
            if scoring.stale_forecast
                && let (Some(model), Some(state)) = (&model, &scoring.state)
            {
                scoring.forecast =
                    served_forecast(model, state, core.quality.as_ref(), index).map(Arc::new);
                scoring.stale_forecast = false;
                forecasts += 1;
                if let Some(forecast) = &scoring.forecast {
                    let lot_id = &self.source.topology().lots()[index].lot_id;
                    if let Some(quality) = &mut core.quality {
                        issue_forecast(quality, model, index, lot_id, forecast);
                    }
                    if let Some(shadow) = &mut core.shadow {
                        issue_forecast(&mut shadow.active_quality, model, index, lot_id, forecast);
                    }
                }
            }
            let previous = read(&self.answers[index]);
            // The periodic refresh of every lot is no news unless something in it changed.
            let changed = !previous
                .snapshot
                .as_ref()
                .is_some_and(|old| same_picture(old, &change.snapshot))
                || !same(&previous.forecast, &scoring.forecast)
                || !same(&previous.model, &model);
            write(
                &self.answers[index],
                Arc::new(LotAnswer {
                    snapshot: Some(change.snapshot),
                    snapshot_ms,
                    forecast: scoring.forecast.clone(),
                    model: model.clone(),
                }),
            );
            if changed {
                self.announce(change.lot);
            }
        }
        core.changes = changes;
        core.published = published;
        if let Some(metrics) = self.metrics.as_ref().filter(|_| replays > 0) {
            metrics.replayed_session_inputs.inc_by(replays);
        }
        let answered = started.elapsed();
        // The shadow forecasts after every answer of the round is out: nothing served waits for
        // it (it used to run lot by lot before each answer, so a grid step's answers waited for
        // two models' work).
        if let Some(shadow) = &mut core.shadow {
            self.forecast_shadow(shadow);
        }
        let shadowed = started.elapsed();
        if all
            && core
                .last_quality_report
                .is_none_or(|at| at.elapsed() >= QUALITY_REPORT_EVERY)
        {
            core.last_quality_report = Some(Instant::now());
            self.report_quality(core);
        }
        let round = started.elapsed();
        if round >= SLOW_ROUND {
            tracing::debug!(
                lots = updated,
                forecasts,
                take_changes_ms = taken.as_secs_f64() * 1e3,
                answers_ms = (answered - taken).as_secs_f64() * 1e3,
                shadow_ms = (shadowed - answered).as_secs_f64() * 1e3,
                report_ms = (round - shadowed).as_secs_f64() * 1e3,
                "slow scoring round: {:.1} ms",
                round.as_secs_f64() * 1e3
            );
        }
        if let Some(metrics) = &self.metrics {
            metrics
                .scoring_round_seconds
                .observe(started.elapsed().as_secs_f64());
            if all {
                let oldest = core
                    .lots
                    .iter()
                    .filter_map(|lot| lot.forecast.as_ref().map(|forecast| forecast.origin_ms))
                    .min();
                metrics
                    .forecast_age_seconds
                    .set(oldest.map_or(0, |origin| (self.clock.now_ms() - origin).max(0) / 1_000));
            }
        }
        updated
    }

    /// Forecasts the shadow's lots whose inputs changed and hands the forecasts to its monitor.
    fn forecast_shadow(&self, shadow: &mut Shadow) {
        for index in 0..shadow.stale.len() {
            if !std::mem::take(&mut shadow.stale[index]) {
                continue;
            }
            let Some(state) = &shadow.states[index] else {
                continue;
            };
            if let Some(forecast) =
                served_forecast(&shadow.model, state, Some(&shadow.quality), index)
            {
                let lot_id = &self.source.topology().lots()[index].lot_id;
                issue_forecast(&mut shadow.quality, &shadow.model, index, lot_id, &forecast);
            }
        }
    }

    /// Publishes live accuracy to the metrics and logs the lots (and the city) that start or stop
    /// drifting, by name.
    fn report_quality(&self, core: &mut Core) {
        let Some(quality) = &core.quality else {
            return;
        };
        let now_ms = self.clock.now_ms();
        let drifting = quality.drift(now_ms);
        if let Some(metrics) = &self.metrics {
            let shadow = core
                .shadow
                .as_ref()
                .map(|shadow| shadow.quality.summary(now_ms));
            metrics.quality(&quality.summary(now_ms), &drifting, shadow.as_deref());
        }
        let name = |drift: &Drifting| match drift.lot {
            Some(lot) => format!("lot {}", self.topology().lots()[lot].lot_id),
            None => "the city".to_owned(),
        };
        let key = |drift: &Drifting| (drift.lot, drift.horizon_minutes);
        let config = self.quality_config;
        for drift in &drifting {
            if !core.drifting.iter().any(|old| key(old) == key(drift)) {
                tracing::warn!(
                    lot = ?drift.lot.map(|lot| &self.topology().lots()[lot].lot_id),
                    horizon_minutes = drift.horizon_minutes,
                    live_mae = drift.live_mae,
                    backtest_mae = drift.backtest_mae,
                    "drift: {} at {} min, live MAE {:.4} above {}x the backtest's {:.4} for {} hours",
                    name(drift),
                    drift.horizon_minutes,
                    drift.live_mae,
                    config.drift_factor,
                    drift.backtest_mae,
                    config.drift_hours
                );
            }
        }
        for old in &core.drifting {
            if !drifting.iter().any(|drift| key(drift) == key(old)) {
                tracing::info!(
                    horizon_minutes = old.horizon_minutes,
                    "drift cleared: {} at {} min",
                    name(old),
                    old.horizon_minutes
                );
            }
        }
        core.drifting = drifting;
    }

    /// How long until the next full refresh of every lot is due (zero: now).
    fn full_refresh_due_in(&self) -> Duration {
        let period = Duration::from_millis(self.config.refresh_all_ms);
        self.core()
            .last_full_refresh
            .map_or(Duration::ZERO, |at| period.saturating_sub(at.elapsed()))
    }

    /// Runs [`Scoring::tick`] on its own thread until `stop` is set: when ingestion has news
    /// ([`LiveSource::wait_for_news`]) or the full refresh is due, and never twice within
    /// `debounce_ms` (a burst of events costs one round). An idle server sleeps between its
    /// once-a-second refreshes instead of running a round every debounce period; the first event
    /// after a quiet spell is scored at once.
    pub fn spawn(
        self: &Arc<Self>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        /// The longest wait without looking at `stop`.
        const STOP_CHECK: Duration = Duration::from_millis(100);
        let scoring = Arc::clone(self);
        std::thread::Builder::new()
            .name("parkcast-scoring".to_owned())
            .spawn(move || {
                let debounce = Duration::from_millis(scoring.config.debounce_ms.max(1));
                let mut seen = 0;
                while !stop.load(Ordering::Relaxed) {
                    let refresh_in = scoring.full_refresh_due_in();
                    let news = scoring
                        .source
                        .wait_for_news(seen, refresh_in.min(STOP_CHECK));
                    if news == seen && !scoring.full_refresh_due_in().is_zero() {
                        continue;
                    }
                    seen = news;
                    let started = Instant::now();
                    scoring.tick();
                    std::thread::sleep(debounce.saturating_sub(started.elapsed()));
                }
            })
    }
}

/// Whether two pictures answer the same: counts and newest event (dwell times and flow windows move
/// with the clock alone).
fn same_picture(left: &LotSnapshot, right: &LotSnapshot) -> bool {
    (left.occupied, left.free, left.unknown, left.newest_event_ms)
        == (
            right.occupied,
            right.free,
            right.unknown,
            right.newest_event_ms,
        )
}

/// Whether two optional shared values are the same allocation (or both absent).
fn same<T>(left: &Option<Arc<T>>, right: &Option<Arc<T>>) -> bool {
    match (left, right) {
        (Some(left), Some(right)) => Arc::ptr_eq(left, right),
        (None, None) => true,
        _ => false,
    }
}

/// Applies one input to a lot's feature state (if a model is active) and logs it, so that a state
/// rebuilt from the log is this one bit for bit; a forecast whose inputs changed is marked stale.
/// How often live accuracy is summed for the metrics and drift is judged: the sums walk a day of
/// scores of every lot and horizon (a few ms for a thousand lots).
const QUALITY_REPORT_EVERY: Duration = Duration::from_secs(10);

/// A round at least this long logs where its time went (debug level).
const SLOW_ROUND: Duration = Duration::from_millis(50);

/// A monitor of the live accuracy of `served` over the lots `lot_ids` (in index order), judged
/// against its backtest MAE per horizon (the manifest's figure for the model it serves) and each
/// lot's own by day type and hour, or over the day (the model file's, where it has them).
pub fn quality_monitor(
    served: &ServedModel,
    lot_ids: &[&str],
    config: QualityConfig,
) -> QualityMonitor {
    let horizons = served.model.horizons_minutes();
    let name = served.model.forecaster().name();
    let backtest_mae = horizons
        .iter()
        .map(|minutes| {
            served
                .manifest
                .card
                .metrics
                .iter()
                .find(|metric| metric.model == name && metric.horizon_minutes == *minutes)
                .map_or(f64::NAN, |metric| metric.mae_rate)
        })
        .collect();
    let references = lot_ids
        .iter()
        .map(|lot_id| LotReference {
            hourly: horizons
                .iter()
                .map(|minutes| served.model.lot_hourly_mae(lot_id, *minutes).map(Arc::from))
                .collect(),
            whole_day: horizons
                .iter()
                .map(|minutes| {
                    served
                        .model
                        .lot_backtest_mae(lot_id, *minutes)
                        .unwrap_or(f64::NAN)
                })
                .collect(),
            spread: horizons
                .iter()
                .map(|minutes| {
                    served
                        .model
                        .lot_error_spread(lot_id, *minutes)
                        .unwrap_or(f64::NAN)
                })
                .collect(),
            clock: served
                .model
                .lot(lot_id)
                .map(|(context, _)| (context.timezone, Arc::clone(&context.holidays))),
        })
        .collect();
    QualityMonitor::with_references(horizons, backtest_mae, references, config).with_adaptive(
        served.model.step_minutes(),
        served.model.calibration_scope(),
    )
}

/// The forecast `served` answers with from `state` for lot `lot`: none when it is not a rate in
/// [0, 1] (not answered, nor kept), else with each horizon's adaptive interval scale from
/// `quality`, the model's live monitor. The scorer (active model and shadow) and
/// [`crate::recompute`] forecast through here, so a recomputation scores what the server issued.
pub fn served_forecast(
    served: &ServedModel,
    state: &LotFeatureState,
    quality: Option<&QualityMonitor>,
    lot: usize,
) -> Option<LotForecast> {
    let mut forecast = served
        .model
        .forecast(state)
        .filter(|forecast| check_forecast(served, forecast).is_ok())?;
    if let Some(quality) = quality {
        quality.adapt(lot, &mut forecast);
    }
    Some(forecast)
}

/// Keeps a forecast `served` issued for lot `lot` (`lot_id`) in `quality`, with the 80% and 95%
/// intervals of each horizon a request for exactly its target reads.
pub fn issue_forecast(
    quality: &mut QualityMonitor,
    served: &ServedModel,
    lot: usize,
    lot_id: &str,
    forecast: &LotForecast,
) {
    quality.issue(lot, forecast, &intervals(served, lot_id, forecast));
}

/// The 80% and 95% intervals of each horizon of a forecast, as a request for exactly its target
/// reads them.
fn intervals(
    served: &ServedModel,
    lot_id: &str,
    forecast: &LotForecast,
) -> Vec<Option<IssuedIntervals>> {
    forecast
        .horizons
        .iter()
        .map(|horizon| {
            served
                .model
                .calibration_for(lot_id, horizon.horizon_minutes, horizon.target_ms)
                .filter(|_| horizon.rate.is_finite())
                .map(|calibration| {
                    let scaled = calibration.scaled(horizon.interval_scale);
                    let rate = horizon.rate.clamp(0.0, 1.0);
                    ADAPTIVE_COVERAGES.map(|coverage| scaled.interval(rate, coverage))
                })
        })
        .collect()
}

fn apply_input(scoring: &mut LotScoring, input: Applied) {
    scoring.history.push(input);
    if let Some(state) = &mut scoring.state
        && input.apply(state)
    {
        scoring.stale_forecast = true;
    }
}

/// A live input as the feature state takes it.
fn applied(input: FeatureInput) -> Applied {
    match input {
        FeatureInput::Grid {
            instant_ms,
            occupied,
            capacity,
            ..
        } => Applied::Grid(
            instant_ms,
            GridValue {
                occupied: f64::from(occupied),
                capacity: f64::from(capacity),
            },
        ),
        FeatureInput::Arrival(at) => Applied::Arrival(at),
        FeatureInput::Departure(at) => Applied::Departure(at),
    }
}

/// Refuses a model on another grid than the server samples (`expected` minutes).
fn check_step(served: &ServedModel, expected: u32) -> Result<(), ScoringError> {
    let found = served.model.step_minutes();
    if found == expected {
        Ok(())
    } else {
        Err(ScoringError::Step {
            name: served.manifest.card.name.clone(),
            version: served.manifest.version,
            expected,
            found,
        })
    }
}

pub(crate) fn check_forecast(
    served: &ServedModel,
    forecast: &LotForecast,
) -> Result<(), ScoringError> {
    let smoke = |reason: String| ScoringError::Smoke {
        name: served.manifest.card.name.clone(),
        version: served.manifest.version,
        reason,
    };
    for horizon in &forecast.horizons {
        if !(horizon.rate.is_finite() && (0.0..=1.0).contains(&horizon.rate)) {
            return Err(smoke(format!(
                "forecast {} at {} min is not a rate in [0, 1]",
                horizon.rate, horizon.horizon_minutes
            )));
        }
        if served.model.calibration(horizon.horizon_minutes).is_none() {
            return Err(smoke(format!(
                "no calibration for the {} min horizon",
                horizon.horizon_minutes
            )));
        }
    }
    Ok(())
}

/// Without any lot history: one synthetic half-full reading on the first lot the model knows.
fn smoke_without_history(served: &ServedModel) -> Result<(), ScoringError> {
    let smoke = |reason: &str| ScoringError::Smoke {
        name: served.manifest.card.name.clone(),
        version: served.manifest.version,
        reason: reason.to_owned(),
    };
    let first = served
        .model
        .bundle
        .lots
        .first()
        .ok_or_else(|| smoke("the model knows no lot"))?;
    let mut state = served
        .model
        .new_state(&first.lot_id)
        .ok_or_else(|| smoke("the model's first lot has no state"))?;
    let instant = first.fitted_until_ms;
    state.push_value(
        instant - instant.rem_euclid(i64::from(served.model.step_minutes()) * 60_000),
        GridValue {
            occupied: 5.0,
            capacity: 10.0,
        },
    );
    let forecast = served
        .model
        .forecast(&state)
        .ok_or_else(|| smoke("no forecast from a one-value state"))?;
    check_forecast(served, &forecast)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parkcast_inference::artifact::HorizonForecast;

    const MINUTE: i64 = 60_000;

    fn forecast() -> LotForecast {
        // Origin 00:00; horizons 15 and 60 min.
        LotForecast {
            origin_ms: 0,
            capacity: 10.0,
            horizons: vec![
                HorizonForecast {
                    horizon_minutes: 15,
                    target_ms: 15 * MINUTE,
                    rate: 0.6,
                    interval_scale: IntervalScale::ONE,
                },
                HorizonForecast {
                    horizon_minutes: 60,
                    target_ms: 60 * MINUTE,
                    rate: 0.9,
                    interval_scale: IntervalScale::ONE,
                },
            ],
        }
    }

    /// A lot's feature state over a synthetic daily wave (15-minute grid, UTC, no holidays).
    fn wave_state(sessions: bool) -> LotFeatureState {
        use parkcast_features::baseline::WeekdayProfile;
        use parkcast_features::calendar::HolidayCalendar;
        use parkcast_features::grid::GridSeries;
        use parkcast_features::vector::{FeatureParams, LotContext, LotProfile};
        let mut series = GridSeries::new(15 * MINUTE, chrono_tz::UTC);
        for (instant, value) in wave(20 * DAY - 21 * DAY, 20 * DAY) {
            series.push(instant, value.occupied, value.capacity);
        }
        let context = LotContext {
            lot_code: Some(0),
            kind_code: None,
            timezone: chrono_tz::UTC,
            holidays: Arc::new(HolidayCalendar::from_dates("XX", [])),
            has_sessions: sessions,
            events: Arc::from(Vec::new()),
            tariffs: Arc::from(Vec::new()),
        };
        let profile = WeekdayProfile::fit(&series, 19 * DAY);
        LotFeatureState::new(
            FeatureParams::new(15),
            context,
            Arc::new(LotProfile::new(profile, 19 * DAY)),
        )
    }

    const DAY: i64 = 86_400_000;

    /// Grid values of a daily wave with irregular noise, over `[from_ms, until_ms)`.
    fn wave(from_ms: i64, until_ms: i64) -> Vec<(i64, GridValue)> {
        (from_ms / (15 * MINUTE)..until_ms / (15 * MINUTE))
            .map(|step| {
                let instant = step * 15 * MINUTE;
                let phase = (instant.rem_euclid(DAY) as f64) / DAY as f64;
                let rate = 0.55 - 0.35 * (2.0 * std::f64::consts::PI * phase).cos();
                let noise = (step as f64 * 1.1).sin() * 1.2;
                let occupied = (rate * 20.0 + noise).clamp(0.0, 20.0);
                (
                    instant,
                    GridValue {
                        occupied,
                        capacity: 20.0,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_state_rebuilt_from_the_log_is_the_state_fed_live_bit_for_bit() {
        let now = 20 * DAY + 16 * 60 * MINUTE;
        let mut lot = LotScoring {
            state: Some(wave_state(true)),
            ..LotScoring::default()
        };
        // Nine days of history, then live values: the first three hours replace the newest
        // history values, the rest extend it; session entries come in late, some after the grid
        // instant they count towards was applied.
        for (instant, value) in wave(now - 9 * DAY, now) {
            apply_input(&mut lot, Applied::Grid(instant, value));
        }
        let mut tidy = std::collections::BTreeMap::new();
        tidy.extend(wave(now - 9 * DAY, now));
        for (index, (instant, _)) in wave(now - 3 * 60 * MINUTE, now + 6 * 60 * MINUTE)
            .into_iter()
            .enumerate()
        {
            let value = GridValue {
                occupied: (index * 7 % 19) as f64,
                capacity: 20.0,
            };
            apply_input(&mut lot, Applied::Grid(instant, value));
            tidy.insert(instant, value);
            apply_input(&mut lot, Applied::Arrival(instant - 20 * MINUTE));
        }
        assert!(lot.stale_forecast);
        let live = lot.state.as_ref().expect("a state");
        let mut rebuilt = wave_state(true);
        lot.history.replay_into(&mut rebuilt);
        // The series as a tidy history kept it (replaced values in place) gives other last bits:
        // why the log keeps the order the state saw.
        let mut from_series = wave_state(false);
        for (instant, value) in &tidy {
            from_series.push_value(*instant, *value);
        }
        let bits = |state: &LotFeatureState, horizon| {
            state.vector(horizon).expect("a vector").map(f64::to_bits)
        };
        let deviation_today = parkcast_features::vector::index::DEVIATION_TODAY;
        for horizon in [1, 4, 8, 96] {
            assert_eq!(
                bits(live, horizon),
                bits(&rebuilt, horizon),
                "{horizon} steps"
            );
            assert_ne!(
                bits(live, horizon)[deviation_today],
                bits(&from_series, horizon)[deviation_today]
            );
        }
    }

    #[test]
    fn a_handover_replay_counts_each_session_once() {
        let now = 20 * DAY + 16 * 60 * MINUTE;
        // A grid value, an entry and an exit every step for two days.
        let inputs: Vec<Applied> = wave(now - 2 * DAY, now)
            .into_iter()
            .flat_map(|(instant, value)| {
                [
                    Applied::Grid(instant, value),
                    Applied::Arrival(instant + MINUTE),
                    Applied::Departure(instant + 2 * MINUTE),
                ]
            })
            .collect();
        // The old owner published all but the last two steps; the new owner's checkpoint is three
        // hours older, so it replays from there and meets ten steps' inputs again.
        let (checkpoint, published) = (inputs.len() - 3 * 12, inputs.len() - 3 * 2);
        let fresh = || LotScoring {
            state: Some(wave_state(true)),
            ..LotScoring::default()
        };
        let mut single = fresh();
        for input in &inputs {
            assert!(single.admits(*input, Origin::Own));
            apply_input(&mut single, *input);
        }
        let (mut taken_over, mut counted_twice) = (fresh(), fresh());
        for input in &inputs[..published] {
            assert!(taken_over.admits(*input, Origin::Standby));
            apply_input(&mut taken_over, *input);
            apply_input(&mut counted_twice, *input);
        }
        let mut replays = 0;
        for input in &inputs[checkpoint..] {
            if taken_over.admits(*input, Origin::Own) {
                apply_input(&mut taken_over, *input);
            } else {
                replays += 1;
            }
            apply_input(&mut counted_twice, *input);
        }
        // Every session event between the checkpoint and the last one published, and no grid value.
        let sessions_again = inputs[checkpoint..published]
            .iter()
            .filter(|input| !matches!(input, Applied::Grid(..)))
            .count();
        assert_eq!(replays, sessions_again);
        let vector = |lot: &LotScoring, horizon| {
            lot.state
                .as_ref()
                .and_then(|state| state.vector(horizon))
                .expect("a vector")
        };
        for horizon in [1, 4, 96] {
            let (want, got, twice) = (
                vector(&single, horizon),
                vector(&taken_over, horizon),
                vector(&counted_twice, horizon),
            );
            for (feature, (want, got)) in want.iter().zip(&got).enumerate() {
                assert!(
                    (want.is_nan() && got.is_nan())
                        || (want - got).abs() <= 1e-9 * want.abs().max(1.0),
                    "feature {feature} at {horizon} steps: {got} for {want}"
                );
            }
            assert!(
                want.iter()
                    .zip(&twice)
                    .any(|(want, twice)| (want - twice).abs() > 1e-6),
                "counting the replay twice would show at {horizon} steps"
            );
        }
        // A session event older than what the standby applied is a replay even after the
        // handover; a newer one counts.
        assert!(!taken_over.admits(Applied::Arrival(now - DAY), Origin::Own));
        assert!(taken_over.admits(Applied::Arrival(now + MINUTE), Origin::Own));
    }

    #[test]
    fn interpolation_runs_from_the_live_reading_through_the_horizons() {
        let narrow = ResidualCalibration::fit([-0.1, 0.0, 0.1]).expect("residuals");
        let wide = ResidualCalibration::fit([-0.2, 0.0, 0.2]).expect("residuals");
        let calibration = |minutes| match minutes {
            15 => Some(&narrow),
            60 => Some(&wide),
            _ => None,
        };
        let forecast = forecast();
        // Now is 00:05 with a live rate of 0.4: 00:10 lies half way to the 15-min target.
        let now = Some((5 * MINUTE, 0.4));
        let at = |target| forecast_at(calibration, &forecast, now, target).expect("a forecast");
        let half = at(10 * MINUTE);
        assert!((half.rate - 0.5).abs() < 1e-12, "{half:?}");
        // The first horizon's residuals, halved.
        assert!((half.interval_95.1 - 0.55).abs() < 1e-12, "{half:?}");
        // Exactly now: the reading, certain.
        let exact = at(5 * MINUTE);
        assert_eq!((exact.rate, exact.interval_80), (0.4, (0.4, 0.4)));
        // At a horizon's target: its forecast and its full residuals.
        let fifteen = at(15 * MINUTE);
        assert_eq!(fifteen.rate, 0.6);
        assert!((fifteen.interval_95.0 - 0.5).abs() < 1e-12);
        // Between two targets: linear, with the later horizon's residuals.
        let between = at(30 * MINUTE);
        assert!((between.rate - 0.7).abs() < 1e-12);
        assert!((between.interval_95.1 - 0.9).abs() < 1e-12);
        // Past the last target (the origin lags now): the last forecast, flat.
        assert_eq!(at(64 * MINUTE).rate, 0.9);
        // Full at 0.9 + 0.2 for a third of outcomes: P(any free) two thirds.
        assert!((at(60 * MINUTE).probability_any_free - 2.0 / 3.0).abs() < 1e-12);
        // Without a live reading the first horizon's value holds before its target.
        let blind = forecast_at(calibration, &forecast, None, MINUTE).expect("a forecast");
        assert_eq!(blind.rate, 0.6);
        // A forecast whose targets all lie before now is no forecast.
        assert_eq!(
            forecast_at(
                calibration,
                &forecast,
                Some((61 * MINUTE, 0.5)),
                70 * MINUTE
            ),
            None
        );
        // Probabilities and intervals stay in range.
        for minutes in 5..=65 {
            let point = at(minutes * MINUTE);
            for value in [
                point.rate,
                point.interval_80.0,
                point.interval_95.1,
                point.probability_any_free,
                point.probability_at_least_80,
                point.probability_below_60,
            ] {
                assert!((0.0..=1.0).contains(&value), "{point:?}");
            }
        }
    }
}
