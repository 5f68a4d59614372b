//! The frozen modelling configuration: every modelling choice in one versioned TOML file that runs
//! on every data set.
//!
//! The issue behind it: choices are made on validation days, then frozen in a file the model
//! records, and the same file runs on every city (a gain tuned to one test week does not count).
//! [`EMBEDDED_CONFIG`] (`training/config/parkcast-4.toml`) is the binary's default; a user's file
//! replaces it with `--config FILE`. Parsing refuses unknown keys and names the key of any invalid
//! value, so a typo never silently falls back to a default.
//!
//! ```
//! use parkcast_training::frozen::LoadedConfig;
//!
//! let embedded = LoadedConfig::embedded();
//! assert_eq!(embedded.config.version, 1);
//! let trees = embedded.config.gbm_params();
//! assert_eq!(trees.iterations, embedded.config.gbm.iterations);
//! ```

use std::fmt;

use parkcast_features::conformal::CalibrationScope;
use parkcast_features::vector::{FEATURE_COUNT, FEATURE_NAMES};
use parkcast_inference::model::{ForecasterParams, GbmParams, LinearParams, ModelError, Objective};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::prior::PriorSpec;

/// The configuration the binary embeds (and runs when no `--config` is given).
pub const EMBEDDED_CONFIG: &str = include_str!("../config/parkcast-4.toml");
/// Where [`EMBEDDED_CONFIG`] lives in the repository.
pub const EMBEDDED_CONFIG_PATH: &str = "training/config/parkcast-4.toml";
/// The configuration format this build reads and writes.
pub const CONFIG_VERSION: u32 = 1;

/// Errors of reading a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read the configuration {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not TOML of the expected shape (unknown key, wrong type, missing key); toml's
    /// message names the key and its line.
    #[error("configuration {origin}: {source}")]
    Parse {
        /// Where the text came from (a file path or the embedded name).
        origin: String,
        /// toml's error.
        source: Box<toml::de::Error>,
    },
    /// A format version this build does not read.
    #[error(
        "configuration {origin}: version {found} is not supported (this build reads {CONFIG_VERSION})"
    )]
    UnsupportedVersion {
        /// Where the text came from.
        origin: String,
        /// The version in the file.
        found: u32,
    },
    /// A value out of range.
    #[error("configuration {origin}: {key}: {reason}")]
    InvalidValue {
        /// Where the text came from.
        origin: String,
        /// The key, as a dotted path (`gbm.learning_rate`).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A feature name that is not in the feature vector.
    #[error("configuration {origin}: {key}: no feature {feature:?} (features: {})", FEATURE_NAMES.join(", "))]
    UnknownFeature {
        /// Where the text came from.
        origin: String,
        /// The key (`gbm.excluded_features`).
        key: String,
        /// The name given.
        feature: String,
    },
    /// Writing a configuration failed (a value TOML cannot hold).
    #[error("cannot write the configuration as TOML: {0}")]
    Write(#[from] toml::ser::Error),
}

/// Every modelling choice of the trainer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrozenConfig {
    /// Format version, [`CONFIG_VERSION`].
    pub version: u32,
    /// The configuration's name, recorded by the models trained with it (`parkcast-4`).
    pub name: String,
    /// The gradient-boosted trees.
    pub gbm: GbmSection,
    /// The elastic net.
    pub linear: LinearSection,
    /// The conformal intervals.
    pub intervals: IntervalsSection,
    /// Rows other cities lend the learned models (absent: the city's own rows only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<PriorSpec>,
    /// Why the values are what they are.
    #[serde(default)]
    pub selection: Selection,
}

/// `[gbm]`: the trees' hyperparameters ([`GbmParams`], LightGBM's names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GbmSection {
    /// The loss: `l1`, `l2`, `huber:DELTA` or `quantile:ALPHA`.
    pub objective: ObjectiveSpec,
    /// Boosting rounds per ensemble.
    pub iterations: usize,
    /// Shrinkage per round.
    pub learning_rate: f64,
    /// Leaves per tree.
    pub max_leaves: usize,
    /// Depth limit (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<usize>,
    /// Minimum training rows per leaf.
    pub min_data_in_leaf: usize,
    /// L2 penalty on leaf outputs.
    pub lambda_l2: f64,
    /// Share of rows each tree sees.
    pub bagging_fraction: f64,
    /// Redraw the rows every this many trees (0: no row bagging).
    pub bagging_freq: usize,
    /// Share of features each tree may split on.
    pub feature_fraction: f64,
    /// Ensembles per horizon over consecutive seeds, averaged.
    pub bagging_seeds: usize,
    /// Seed of the first ensemble.
    pub seed: u64,
    /// Feature groups left out of the trees.
    #[serde(default)]
    pub excluded_groups: Vec<FeatureGroup>,
    /// Single features left out of the trees, by name.
    #[serde(default)]
    pub excluded_features: Vec<String>,
}

/// `[linear]`: the elastic net.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearSection {
    /// Overall penalty strength.
    pub penalty: f64,
    /// Share of the penalty on L1 (0 ridge, 1 lasso).
    pub l1_ratio: f64,
    /// Features left out, by name.
    #[serde(default)]
    pub excluded_features: Vec<String>,
}

/// `[intervals]`: how conformal intervals are calibrated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntervalsSection {
    /// `day-type` or `pooled`.
    pub calibration: CalibrationScope,
    /// Whether residuals are calibrated in units of their lot's scale
    /// (`parkcast_features::conformal::lot_scales`), so each lot's intervals follow its own errors;
    /// `false`: one calibration for every lot. Absent (files written before it): `true`.
    #[serde(default = "lot_scale_default")]
    pub lot_scale: bool,
}

fn lot_scale_default() -> bool {
    true
}

/// `[selection]`: the record of how the values were chosen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// One line: where the values come from.
    #[serde(default)]
    pub summary: String,
    /// The command that produced them (to re-run the search).
    #[serde(default)]
    pub command: String,
    /// The selection log (Markdown): every decision with the validation score that made it.
    #[serde(default)]
    pub log: String,
}

/// A loss as the configuration spells it: `l1`, `l2`, `huber:0.02`, `quantile:0.5`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectiveSpec(pub Objective);

impl fmt::Display for ObjectiveSpec {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Objective::L1 => formatter.write_str("l1"),
            Objective::L2 => formatter.write_str("l2"),
            Objective::Huber { delta } => write!(formatter, "huber:{delta}"),
            Objective::Quantile { alpha } => write!(formatter, "quantile:{alpha}"),
            // A loss added to parkcast-gbm later: spelled as Rust debugs it until it gets a name.
            other => write!(formatter, "{other:?}"),
        }
    }
}

impl TryFrom<String> for ObjectiveSpec {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let (kind, value) = match text.split_once(':') {
            Some((kind, value)) => (kind.trim(), Some(value.trim())),
            None => (text.trim(), None),
        };
        let number = |what: &str| -> Result<f64, String> {
            value
                .ok_or_else(|| format!("{kind} needs its {what}: \"{kind}:NUMBER\""))?
                .parse::<f64>()
                .map_err(|_| format!("{text:?}: the {what} must be a number"))
        };
        let objective = match (kind, value) {
            ("l1", None) => Objective::L1,
            ("l2", None) => Objective::L2,
            ("huber", _) => Objective::Huber {
                delta: number("delta")?,
            },
            ("quantile", _) => Objective::Quantile {
                alpha: number("alpha")?,
            },
            _ => {
                return Err(format!(
                    "objective {text:?}: expected \"l1\", \"l2\", \"huber:DELTA\" or \"quantile:ALPHA\""
                ));
            }
        };
        Ok(ObjectiveSpec(objective))
    }
}

impl From<ObjectiveSpec> for String {
    fn from(spec: ObjectiveSpec) -> String {
        spec.to_string()
    }
}

/// The features grouped by what they say, for leaving a group out and for the ablation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureGroup {
    /// The lot's statics and the horizon: code, kind, capacity, horizon minutes.
    Lot,
    /// The target's and origin's calendar: weekday, time of day, day off, holiday, days to and
    /// from a holiday.
    Calendar,
    /// Recent rates: at the origin, 1, 2 and 4 steps before, the same time a day and a week back.
    Lags,
    /// The weekday x time-of-day profile at origin and target, its change, and persistence +
    /// profile change.
    Profile,
    /// How far today runs from the profile: at the origin, recently, since the first reading.
    Deviation,
    /// The level of the last days: yesterday's and last week's deviation, the deviation at the
    /// target's time 1, 2, 3 and 7 days back, its daily trend.
    Level,
    /// Arrivals and departures in the last hour (sessions).
    Flows,
    /// Cars expected by special events at the target.
    Events,
    /// The price in force at the target against a week before it (where a city has tariffs).
    Price,
}

impl FeatureGroup {
    /// Every group, in vector order of their first feature.
    pub const ALL: [FeatureGroup; 9] = [
        FeatureGroup::Lot,
        FeatureGroup::Calendar,
        FeatureGroup::Lags,
        FeatureGroup::Profile,
        FeatureGroup::Deviation,
        FeatureGroup::Level,
        FeatureGroup::Flows,
        FeatureGroup::Events,
        FeatureGroup::Price,
    ];

    /// The name used in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            FeatureGroup::Lot => "lot",
            FeatureGroup::Calendar => "calendar",
            FeatureGroup::Lags => "lags",
            FeatureGroup::Profile => "profile",
            FeatureGroup::Deviation => "deviation",
            FeatureGroup::Level => "level",
            FeatureGroup::Flows => "flows",
            FeatureGroup::Events => "events",
            FeatureGroup::Price => "price",
        }
    }

    /// The group of a feature name, by what the name says.
    pub fn of(feature: &str) -> FeatureGroup {
        match feature {
            "lot_code" | "lot_kind" | "capacity" | "horizon_minutes" => FeatureGroup::Lot,
            "rate_origin"
            | "rate_lag1"
            | "rate_lag2"
            | "rate_lag4"
            | "rate_same_time_day_back"
            | "rate_same_time_week_back" => FeatureGroup::Lags,
            "profile_target"
            | "profile_origin"
            | "profile_change"
            | "persistence_plus_profile_change" => FeatureGroup::Profile,
            "deviation_origin"
            | "deviation_recent_mean"
            | "deviation_today_mean"
            | "minutes_since_first_reading_today"
            | "deviation_change_1_step"
            | "deviation_change_2_steps" => FeatureGroup::Deviation,
            "arrivals_recent_rate" | "departures_recent_rate" => FeatureGroup::Flows,
            "target_event_cars_rate" => FeatureGroup::Events,
            "target_price_change_week" => FeatureGroup::Price,
            name if name.starts_with("deviation_") => FeatureGroup::Level,
            _ => FeatureGroup::Calendar,
        }
    }

    /// The indices of the group's features in the vector.
    pub fn features(self) -> Vec<usize> {
        (0..FEATURE_COUNT)
            .filter(|&index| FeatureGroup::of(FEATURE_NAMES[index]) == self)
            .collect()
    }
}

impl FrozenConfig {
    /// Parses and validates a configuration's text; `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> Result<FrozenConfig, ConfigError> {
        let config: FrozenConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            origin: origin.to_owned(),
            source: Box::new(source),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// The configuration as TOML text (what `parkcast tune --out` writes).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        Ok(toml::to_string(self)?)
    }

    /// Checks every value without fitting anything; errors name the key.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::InvalidValue {
            origin: origin.to_owned(),
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        if self.version != CONFIG_VERSION {
            return Err(ConfigError::UnsupportedVersion {
                origin: origin.to_owned(),
                found: self.version,
            });
        }
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        for (key, names) in [
            ("gbm.excluded_features", &self.gbm.excluded_features),
            ("linear.excluded_features", &self.linear.excluded_features),
        ] {
            feature_indices(origin, key, names)?;
        }
        if let Err(ModelError::InvalidParam { name, reason }) = self.gbm_params().check() {
            let key = match name {
                "excluded_features" => "gbm.excluded_features / gbm.excluded_groups".to_owned(),
                other => format!("gbm.{other}"),
            };
            return Err(invalid(&key, reason));
        }
        if let Some(prior) = &self.prior {
            if prior.sources.is_empty()
                || prior.sources.iter().any(|source| source.trim().is_empty())
            {
                return Err(invalid(
                    "prior.sources",
                    "must name at least one source, none empty (leave [prior] out for no prior)",
                ));
            }
            if prior.rows_per_horizon == 0 {
                return Err(invalid(
                    "prior.rows_per_horizon",
                    "must be positive (leave [prior] out for no prior)",
                ));
            }
        }
        if !(self.linear.penalty.is_finite() && self.linear.penalty >= 0.0) {
            return Err(invalid("linear.penalty", "must be finite and non-negative"));
        }
        if !(0.0..=1.0).contains(&self.linear.l1_ratio) {
            return Err(invalid("linear.l1_ratio", "must be within [0, 1]"));
        }
        if let Err(ModelError::InvalidParam { name, reason }) = self.linear_params().check() {
            return Err(invalid(&format!("linear.{name}"), reason));
        }
        Ok(())
    }

    /// The trees' hyperparameters (names were checked by [`FrozenConfig::validate`]; an unknown one
    /// is skipped here).
    pub fn gbm_params(&self) -> GbmParams {
        let section = &self.gbm;
        let mut excluded: Vec<usize> = section
            .excluded_groups
            .iter()
            .flat_map(|group| group.features())
            .chain(known_indices(&section.excluded_features))
            .collect();
        excluded.sort_unstable();
        excluded.dedup();
        GbmParams {
            objective: section.objective.0,
            iterations: section.iterations,
            learning_rate: section.learning_rate,
            max_leaves: section.max_leaves,
            max_depth: section.max_depth,
            min_data_in_leaf: section.min_data_in_leaf,
            lambda_l2: section.lambda_l2,
            bagging_fraction: section.bagging_fraction,
            bagging_freq: section.bagging_freq,
            feature_fraction: section.feature_fraction,
            bagging_seeds: section.bagging_seeds,
            seed: section.seed,
            excluded_features: excluded,
        }
    }

    /// The elastic net's hyperparameters.
    pub fn linear_params(&self) -> LinearParams {
        LinearParams {
            penalty: self.linear.penalty,
            l1_ratio: self.linear.l1_ratio,
            excluded_features: known_indices(&self.linear.excluded_features).collect(),
        }
    }

    /// Both learned models with this configuration's hyperparameters.
    pub fn models(&self) -> crate::backtest::ModelChoice {
        crate::backtest::ModelChoice {
            linear: Some(self.linear_params()),
            gbm: Some(self.gbm_params()),
            prior: self.prior.clone(),
            prior_rows: None,
        }
    }

    /// The interval calibration scope.
    pub fn calibration(&self) -> CalibrationScope {
        self.intervals.calibration
    }

    /// Whether residuals are calibrated per lot scale (`[intervals] lot_scale`).
    pub fn lot_scale(&self) -> bool {
        self.intervals.lot_scale
    }

    /// Copies the trees' hyperparameters back into `[gbm]` (what `parkcast tune` does with a
    /// winner). Excluded features are written by name; groups are kept as they were.
    pub fn set_gbm(&mut self, params: &GbmParams) {
        let from_groups: Vec<usize> = self
            .gbm
            .excluded_groups
            .iter()
            .flat_map(|group| group.features())
            .collect();
        self.gbm = GbmSection {
            objective: ObjectiveSpec(params.objective),
            iterations: params.iterations,
            learning_rate: params.learning_rate,
            max_leaves: params.max_leaves,
            max_depth: params.max_depth,
            min_data_in_leaf: params.min_data_in_leaf,
            lambda_l2: params.lambda_l2,
            bagging_fraction: params.bagging_fraction,
            bagging_freq: params.bagging_freq,
            feature_fraction: params.feature_fraction,
            bagging_seeds: params.bagging_seeds,
            seed: params.seed,
            excluded_groups: self.gbm.excluded_groups.clone(),
            excluded_features: params
                .excluded_features
                .iter()
                .filter(|index| !from_groups.contains(index))
                .filter_map(|&index| FEATURE_NAMES.get(index).map(|name| (*name).to_owned()))
                .collect(),
        };
    }
}

/// The indices of feature names; the first unknown one is an error naming `key`.
fn feature_indices(origin: &str, key: &str, names: &[String]) -> Result<Vec<usize>, ConfigError> {
    names
        .iter()
        .map(|name| {
            FEATURE_NAMES
                .iter()
                .position(|feature| feature == name)
                .ok_or_else(|| ConfigError::UnknownFeature {
                    origin: origin.to_owned(),
                    key: key.to_owned(),
                    feature: name.clone(),
                })
        })
        .collect()
}

fn known_indices(names: &[String]) -> impl Iterator<Item = usize> + '_ {
    names
        .iter()
        .filter_map(|name| FEATURE_NAMES.iter().position(|feature| feature == name))
}

/// A configuration with the text it was read from: what a model records.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConfig {
    /// Where it came from: a file path, or [`EMBEDDED_CONFIG_PATH`] (embedded).
    pub origin: String,
    /// The text as read (what the sha256 covers).
    pub text: String,
    /// The parsed, validated configuration.
    pub config: FrozenConfig,
}

impl LoadedConfig {
    /// The configuration embedded in the binary.
    pub fn embedded() -> LoadedConfig {
        LoadedConfig::from_text(
            &format!("{EMBEDDED_CONFIG_PATH} (embedded)"),
            EMBEDDED_CONFIG,
        )
        .expect("the embedded configuration should parse (a unit test checks it)")
    }

    /// The configuration in `path` (`--config FILE`), or the one built in.
    pub fn load(path: Option<&std::path::Path>) -> Result<LoadedConfig, ConfigError> {
        let Some(path) = path else {
            return Ok(LoadedConfig::embedded());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        LoadedConfig::from_text(&path.display().to_string(), &text)
    }

    /// Parses a configuration's text.
    pub fn from_text(origin: &str, text: &str) -> Result<LoadedConfig, ConfigError> {
        Ok(LoadedConfig {
            origin: origin.to_owned(),
            text: text.to_owned(),
            config: FrozenConfig::parse(origin, text)?,
        })
    }

    /// Lowercase hex sha256 of the text.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.text.as_bytes()))
    }

    /// The record a model keeps, with the knobs the command line overrode.
    pub fn record(&self, overrides: Vec<String>) -> ConfigRecord {
        ConfigRecord {
            name: self.config.name.clone(),
            version: self.config.version,
            sha256: self.sha256(),
            overrides,
            toml: self.text.clone(),
        }
    }
}

/// What a published model records of its configuration (in the manifest's
/// `hyperparameters.frozen_config`; models published before it have none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigRecord {
    /// The configuration's `name`.
    pub name: String,
    /// Its format version.
    pub version: u32,
    /// Lowercase hex sha256 of its text.
    pub sha256: String,
    /// Knobs the command line set differently (`gbm.bagging_seeds = 3 (--gbm-bagging-seeds)`):
    /// when not empty the model did not run the configuration as written.
    #[serde(default)]
    pub overrides: Vec<String>,
    /// The full text.
    pub toml: String,
}

impl ConfigRecord {
    /// The key under the manifest's `hyperparameters`.
    pub const MANIFEST_KEY: &'static str = "frozen_config";

    /// The record of a manifest's hyperparameters (`None` for models published before it).
    pub fn from_hyperparameters(hyperparameters: &serde_json::Value) -> Option<ConfigRecord> {
        hyperparameters
            .get(Self::MANIFEST_KEY)
            .and_then(|value| serde_json::from_value(value.clone()).ok())
    }

    /// The recorded configuration, parsed again.
    pub fn parse(&self) -> Result<FrozenConfig, ConfigError> {
        FrozenConfig::parse(&format!("{} (recorded)", self.name), &self.toml)
    }
}

/// Which learned models to train next to the baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum LearnedModels {
    /// Baselines only.
    #[cfg_attr(feature = "clap", value(name = "baselines"))]
    None,
    /// The elastic net.
    Linear,
    /// The gradient-boosted trees.
    Gbm,
    /// Elastic net and trees.
    #[default]
    All,
}

/// Knobs a run sets over the frozen configuration (`parkcast backtest --gbm-iterations 80`):
/// applied to its models and listed in the report, so a model says how it departed from it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// Boosting rounds of the trees.
    pub gbm_iterations: Option<usize>,
    /// Learning rate of the trees.
    pub gbm_learning_rate: Option<f64>,
    /// The trees' loss.
    pub gbm_objective: Option<Objective>,
    /// Ensembles per horizon over bagging seeds.
    pub gbm_bagging_seeds: Option<usize>,
    /// Features the trees leave out, by name (see [`FEATURE_NAMES`]).
    pub gbm_exclude: Vec<String>,
    /// Which residuals calibrate the intervals.
    pub calibration: Option<CalibrationScope>,
    /// Train on the city's own rows only, whatever `[prior]` says.
    pub no_prior: bool,
}

/// A feature name that is not one of [`FEATURE_NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--gbm-exclude: no feature {name:?}; features: {}", FEATURE_NAMES.join(", "))]
pub struct UnknownFeature {
    /// The name given.
    pub name: String,
}

impl Overrides {
    /// The knobs set differently from `frozen`, as the report lists them
    /// (`gbm.iterations = 80 (--gbm-iterations; the configuration says 300)`).
    pub fn describe(&self, frozen: &FrozenConfig) -> Vec<String> {
        let mut overrides = Vec::new();
        let mut note = |key: &str, flag: &str, ours: String, theirs: String| {
            if ours != theirs {
                overrides.push(format!(
                    "{key} = {ours} ({flag}; the configuration says {theirs})"
                ));
            }
        };
        let gbm = &frozen.gbm;
        if let Some(iterations) = self.gbm_iterations {
            note(
                "gbm.iterations",
                "--gbm-iterations",
                iterations.to_string(),
                gbm.iterations.to_string(),
            );
        }
        if let Some(rate) = self.gbm_learning_rate {
            note(
                "gbm.learning_rate",
                "--gbm-learning-rate",
                rate.to_string(),
                gbm.learning_rate.to_string(),
            );
        }
        if let Some(objective) = self.gbm_objective {
            note(
                "gbm.objective",
                "--gbm-objective",
                ObjectiveSpec(objective).to_string(),
                gbm.objective.to_string(),
            );
        }
        if let Some(seeds) = self.gbm_bagging_seeds {
            note(
                "gbm.bagging_seeds",
                "--gbm-bagging-seeds",
                seeds.to_string(),
                gbm.bagging_seeds.to_string(),
            );
        }
        if !self.gbm_exclude.is_empty() {
            overrides.push(format!(
                "gbm.excluded_features += {} (--gbm-exclude)",
                self.gbm_exclude.join(", ")
            ));
        }
        if self.no_prior
            && let Some(prior) = &frozen.prior
        {
            overrides.push(format!(
                "prior = none (--no-prior; the configuration lends rows from {})",
                prior.sources.join(", ")
            ));
        }
        if let Some(ours) = self.calibration
            && ours != frozen.calibration()
        {
            overrides.push(format!(
                "intervals.calibration = {ours:?} (--calibration; the configuration says {:?})",
                frozen.calibration()
            ));
        }
        overrides
    }

    /// The learned models `which` asks for: `frozen`'s hyperparameters with these overrides.
    pub fn models(
        &self,
        frozen: &FrozenConfig,
        which: LearnedModels,
    ) -> Result<crate::backtest::ModelChoice, UnknownFeature> {
        let mut gbm = frozen.gbm_params();
        if let Some(iterations) = self.gbm_iterations {
            gbm.iterations = iterations;
        }
        if let Some(rate) = self.gbm_learning_rate {
            gbm.learning_rate = rate;
        }
        if let Some(objective) = self.gbm_objective {
            gbm.objective = objective;
        }
        if let Some(seeds) = self.gbm_bagging_seeds {
            gbm.bagging_seeds = seeds;
        }
        for name in &self.gbm_exclude {
            let position = FEATURE_NAMES
                .iter()
                .position(|feature| feature == name)
                .ok_or_else(|| UnknownFeature { name: name.clone() })?;
            if !gbm.excluded_features.contains(&position) {
                gbm.excluded_features.push(position);
            }
        }
        let linear = frozen.linear_params();
        let (linear, gbm) = match which {
            LearnedModels::None => (None, None),
            LearnedModels::Linear => (Some(linear), None),
            LearnedModels::Gbm => (None, Some(gbm)),
            LearnedModels::All => (Some(linear), Some(gbm)),
        };
        Ok(crate::backtest::ModelChoice {
            linear,
            gbm,
            prior: frozen
                .prior
                .clone()
                .filter(|_| !self.no_prior && which != LearnedModels::None),
            prior_rows: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_to_the_models_and_are_described_only_where_they_differ() {
        let frozen = LoadedConfig::embedded().config;
        let overrides = Overrides {
            gbm_iterations: Some(frozen.gbm.iterations + 1),
            gbm_bagging_seeds: Some(frozen.gbm.bagging_seeds),
            gbm_exclude: vec![FEATURE_NAMES[0].to_owned()],
            ..Overrides::default()
        };
        let described = overrides.describe(&frozen);
        assert_eq!(described.len(), 2, "{described:?}");
        assert!(
            described[0].starts_with("gbm.iterations = "),
            "{described:?}"
        );
        let models = overrides
            .models(&frozen, LearnedModels::Gbm)
            .expect("known features");
        let gbm = models.gbm.expect("trees asked for");
        assert!(models.linear.is_none());
        assert_eq!(gbm.iterations, frozen.gbm.iterations + 1);
        assert!(gbm.excluded_features.contains(&0));
        let unknown = Overrides {
            gbm_exclude: vec!["no_such_feature".to_owned()],
            ..Overrides::default()
        };
        let error = unknown
            .models(&frozen, LearnedModels::All)
            .expect_err("an unknown feature");
        assert!(error.to_string().contains("no_such_feature"), "{error}");
    }

    #[test]
    fn the_prior_is_on_by_default_off_with_no_prior_and_checked_by_key() {
        let frozen = LoadedConfig::embedded().config;
        let prior = frozen
            .prior
            .clone()
            .expect("the embedded configuration lends rows");
        assert_eq!(prior.sources, vec!["birmingham", "malaga"]);
        let models = Overrides::default()
            .models(&frozen, LearnedModels::Gbm)
            .expect("models");
        assert_eq!(models.prior, Some(prior.clone()));
        assert!(
            models.prior_rows.is_none(),
            "read by the run, not the configuration"
        );
        let off = Overrides {
            no_prior: true,
            ..Overrides::default()
        };
        assert_eq!(
            off.models(&frozen, LearnedModels::All)
                .expect("models")
                .prior,
            None
        );
        assert_eq!(
            off.describe(&frozen),
            vec![
                "prior = none (--no-prior; the configuration lends rows from birmingham, malaga)"
                    .to_owned()
            ]
        );
        for (text, key) in [
            (
                "sources = []\nrows_per_horizon = 10\nmax_own_rows = 10",
                "prior.sources",
            ),
            (
                "sources = [\"a\"]\nrows_per_horizon = 0\nmax_own_rows = 10",
                "prior.rows_per_horizon",
            ),
        ] {
            let mut config = frozen.clone();
            config.prior = Some(toml::from_str(text).expect("the shape parses"));
            let error = config.validate("x.toml").expect_err("invalid").to_string();
            assert!(
                error.starts_with(&format!("configuration x.toml: {key}: ")),
                "{error}"
            );
        }
        let unknown = toml::from_str::<PriorSpec>("sources = []\nrows = 1");
        assert!(unknown.is_err(), "unknown keys are refused");
    }

    #[test]
    fn override_lines_spell_values_as_the_configuration_does() {
        let frozen = LoadedConfig::embedded().config;
        let overrides = Overrides {
            // The CLI reads the rate as f32: the line shows the f64 it becomes.
            gbm_learning_rate: Some(f64::from(0.1_f32)),
            gbm_objective: Some(Objective::L2),
            gbm_exclude: vec![FEATURE_NAMES[0].to_owned(), FEATURE_NAMES[0].to_owned()],
            calibration: Some(frozen.calibration()),
            ..Overrides::default()
        };
        assert_eq!(
            overrides.describe(&frozen),
            vec![
                format!(
                    "gbm.learning_rate = 0.10000000149011612 (--gbm-learning-rate; the configuration says {})",
                    frozen.gbm.learning_rate
                ),
                format!(
                    "gbm.objective = l2 (--gbm-objective; the configuration says {})",
                    frozen.gbm.objective
                ),
                format!(
                    "gbm.excluded_features += {0}, {0} (--gbm-exclude)",
                    FEATURE_NAMES[0]
                ),
            ]
        );
        let models = overrides
            .models(&frozen, LearnedModels::All)
            .expect("known features");
        let gbm = models.gbm.expect("trees asked for");
        assert_eq!(gbm.objective, Objective::L2);
        assert_eq!(
            gbm.excluded_features
                .iter()
                .filter(|index| **index == 0)
                .count(),
            1,
            "a feature named twice is left out once"
        );
        assert_eq!(models.linear, Some(frozen.linear_params()));
        assert!(Overrides::default().describe(&frozen).is_empty());
        assert_eq!(
            Overrides::default().models(&frozen, LearnedModels::None),
            Ok(crate::backtest::ModelChoice::default())
        );
    }

    fn with(old: &str, new: &str) -> String {
        assert!(
            EMBEDDED_CONFIG.contains(old),
            "{old:?} not in the embedded file"
        );
        EMBEDDED_CONFIG.replacen(old, new, 1)
    }

    #[test]
    fn the_embedded_configuration_is_valid_and_matches_the_defaults() {
        let loaded = LoadedConfig::embedded();
        assert_eq!(loaded.config.gbm_params(), GbmParams::default());
        assert_eq!(loaded.config.linear_params(), LinearParams::default());
        assert_eq!(loaded.config.calibration(), CalibrationScope::default());
        assert_eq!(loaded.sha256().len(), 64);
    }

    #[test]
    fn lot_scales_are_on_unless_the_configuration_turns_them_off() {
        assert!(LoadedConfig::embedded().config.lot_scale());
        let off = with(
            "calibration = \"day-type\"",
            "calibration = \"day-type\"\nlot_scale = false",
        );
        let parsed = FrozenConfig::parse("off.toml", &off).expect("parses");
        assert!(!parsed.lot_scale());
        let wrong = with(
            "calibration = \"day-type\"",
            "calibration = \"day-type\"\nlot_scale = \"yes\"",
        );
        let error = FrozenConfig::parse("wrong.toml", &wrong).expect_err("refused");
        let text = error.to_string();
        assert!(
            text.contains("lot_scale") && text.contains("expected a boolean"),
            "{text}"
        );
    }

    #[test]
    fn every_feature_has_one_group_and_every_group_a_feature() {
        let total: usize = FeatureGroup::ALL
            .iter()
            .map(|group| group.features().len())
            .sum();
        assert_eq!(total, FEATURE_COUNT);
        for group in FeatureGroup::ALL {
            assert!(!group.features().is_empty(), "{group:?} is empty");
        }
        assert_eq!(
            FeatureGroup::of("deviation_target_day1_back"),
            FeatureGroup::Level
        );
        assert_eq!(FeatureGroup::of("target_holiday"), FeatureGroup::Calendar);
    }

    #[test]
    fn an_unknown_key_is_refused_and_named() {
        let text = with("lambda_l2 = 0.0", "lambda_l2 = 0.0\nlamda_l1 = 0.5");
        let error = FrozenConfig::parse("test", &text).expect_err("unknown key");
        assert!(matches!(error, ConfigError::Parse { .. }), "{error:?}");
        assert!(error.to_string().contains("lamda_l1"), "{error}");
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key() {
        let text = with("max_leaves = 31", "max_leaves = \"many\"");
        let error = FrozenConfig::parse("test", &text).expect_err("wrong type");
        assert!(error.to_string().contains("max_leaves"), "{error}");
    }

    #[test]
    fn an_out_of_range_value_names_its_dotted_key() {
        let text = with("learning_rate = 0.05", "learning_rate = -1.0");
        match FrozenConfig::parse("test", &text) {
            Err(ConfigError::InvalidValue { key, .. }) => assert_eq!(key, "gbm.learning_rate"),
            other => panic!("expected an invalid gbm.learning_rate, got {other:?}"),
        }
        let text = with("l1_ratio = 0.5", "l1_ratio = 1.5");
        match FrozenConfig::parse("test", &text) {
            Err(ConfigError::InvalidValue { key, .. }) => assert_eq!(key, "linear.l1_ratio"),
            other => panic!("expected an invalid linear.l1_ratio, got {other:?}"),
        }
        let text = with("bagging_seeds = 1", "bagging_seeds = 0");
        match FrozenConfig::parse("test", &text) {
            Err(ConfigError::InvalidValue { key, .. }) => assert_eq!(key, "gbm.bagging_seeds"),
            other => panic!("expected an invalid gbm.bagging_seeds, got {other:?}"),
        }
    }

    #[test]
    fn unknown_features_groups_objectives_and_versions_are_named() {
        let text = with(
            "excluded_features = []",
            "excluded_features = [\"rate_lag3\"]",
        );
        match FrozenConfig::parse("test", &text) {
            Err(ConfigError::UnknownFeature { key, feature, .. }) => {
                assert_eq!(
                    (key.as_str(), feature.as_str()),
                    ("gbm.excluded_features", "rate_lag3")
                );
            }
            other => panic!("expected an unknown feature, got {other:?}"),
        }
        let text = with("excluded_groups = []", "excluded_groups = [\"weather\"]");
        let error = FrozenConfig::parse("test", &text).expect_err("unknown group");
        assert!(error.to_string().contains("weather"), "{error}");
        let text = with("objective = \"l1\"", "objective = \"huber\"");
        let error = FrozenConfig::parse("test", &text).expect_err("huber needs delta");
        assert!(error.to_string().contains("objective"), "{error}");
        let text = with("version = 1", "version = 9");
        assert!(matches!(
            FrozenConfig::parse("test", &text),
            Err(ConfigError::UnsupportedVersion { found: 9, .. })
        ));
    }

    #[test]
    fn objectives_groups_and_features_map_to_the_trees() {
        let text = with("objective = \"l1\"", "objective = \"huber:0.02\"")
            .replacen("excluded_groups = []", "excluded_groups = [\"flows\"]", 1)
            .replacen(
                "excluded_features = []",
                "excluded_features = [\"capacity\", \"arrivals_recent_rate\"]",
                1,
            );
        let config = FrozenConfig::parse("test", &text).expect("valid");
        let params = config.gbm_params();
        assert_eq!(params.objective, Objective::Huber { delta: 0.02 });
        let mut expected = FeatureGroup::Flows.features();
        expected.push(2);
        expected.sort_unstable();
        assert_eq!(params.excluded_features, expected);
    }

    #[test]
    fn a_written_configuration_reads_back_equal() {
        let mut config = LoadedConfig::embedded().config;
        let params = GbmParams {
            objective: Objective::Quantile { alpha: 0.5 },
            iterations: 123,
            excluded_features: vec![2, 26],
            ..GbmParams::default()
        };
        config.set_gbm(&params);
        config.selection.log = "line one\nline \"two\"\n".to_owned();
        let text = config.to_toml().expect("writes");
        let back = FrozenConfig::parse("written", &text).expect("reads back");
        assert_eq!(back, config);
        assert_eq!(back.gbm_params(), params);
    }
}
