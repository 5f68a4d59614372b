//! The arguments several commands share (where the warehouse is, the broker, the live config,
//! the evaluation protocol) and the parsers of durations on the command line. Commands import
//! this, `progress` and `report`, never each other.
//!
//! Durations (`--horizons 15m,1h,24h`, `query --arrival-in 45m`) are read by one maintained parser
//! (humantime: `90s`, `45m`, `1h30m`, `2h 30m`, `1.5h`, `7d`, `1w`), in the two shapes the flags
//! need.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use clap::{Args, ValueEnum};
use parkcast_features::conformal::CalibrationScope;
use parkcast_kafka::{KafkaConfig, TopicNames};
use parkcast_serving::config::{Profile, ServiceConfig, load_layered};
use parkcast_serving::topology::TopologyIndex;
use parkcast_training::backtest::{BacktestConfig, ModelChoice};
use parkcast_training::frozen::{FrozenConfig, LearnedModels, LoadedConfig, Overrides};
use parkcast_training::model::Objective;
use parkcast_training::protocol::{Preset, ProtocolRequest};
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::topology::Topology;

/// Where a warehouse lives.
#[derive(Debug, Args, Clone)]
pub struct WarehouseLocation {
    /// Warehouse folder (created if missing).
    #[arg(
        long,
        short = 'w',
        env = "PARKCAST_WAREHOUSE",
        default_value = "out/warehouse"
    )]
    pub warehouse: PathBuf,
}

impl WarehouseLocation {
    /// Opens the existing warehouse (commands that only read).
    pub fn open(&self) -> Result<Warehouse> {
        Warehouse::open(&self.warehouse).with_context(|| {
            format!(
                "failed to open the warehouse at {}",
                self.warehouse.display()
            )
        })
    }
}

/// Where the broker is.
#[derive(Debug, Args, Clone, Default)]
pub struct BrokerArgs {
    /// Brokers (`host:port,...`); overrides the config file's `ingest.kafka.bootstrap_servers`.
    #[arg(long, env = "PARKCAST_KAFKA_BOOTSTRAP")]
    pub bootstrap: Option<String>,
    /// Prefix of the topic names (`<prefix>.parkcast.sensor.v1`, ...): several setups share one
    /// broker. Overrides the config file's topic names.
    #[arg(long)]
    pub topic_prefix: Option<String>,
}

impl BrokerArgs {
    /// Applies the flags to a Kafka config.
    pub fn apply(&self, kafka: &mut KafkaConfig) {
        if let Some(bootstrap) = &self.bootstrap {
            kafka.bootstrap_servers.clone_from(bootstrap);
        }
        if let Some(prefix) = &self.topic_prefix {
            kafka.topics = TopicNames::with_prefix(prefix);
        }
    }
}

/// Where live state comes from: the lots (a warehouse's `dim_slot`), the config, the broker, the
/// group and the checkpoints. Shared by `parkcast ingest` and `parkcast serve`.
#[derive(Debug, Args)]
pub struct LiveArgs {
    /// The warehouse whose `dim_slot` lists the lots and slots to accept.
    #[command(flatten)]
    pub warehouse: WarehouseLocation,
    /// Config file (TOML: `[ingest]`, `[ingest.kafka]`, `[serve]`, `[scoring]`, `[limits]`; see
    /// serving/config.example.toml); `PARKCAST__...` environment variables override it
    /// (`PARKCAST__INGEST__KAFKA__BOOTSTRAP_SERVERS`, `PARKCAST__SERVE__ADMIN_TOKEN`).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Profile whose defaults the config starts from: local, staging or production.
    #[arg(long, env = "PARKCAST_PROFILE", default_value = "local")]
    pub profile: Profile,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Consumer group (overrides the config file).
    #[arg(long)]
    pub group: Option<String>,
    /// This replica's static group membership name (`ingest.instance_id`): unique per replica and
    /// stable across its restarts, so a restarted replica takes its partitions back at once.
    #[arg(long, env = "PARKCAST_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Checkpoint folder (overrides the config file).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

impl LiveArgs {
    /// The service config (profile defaults < file < environment < these flags < the command's
    /// own flags, `command_flags`), validated once after every layer so that a value only a flag
    /// supplies (`parkcast serve --admin-token`) counts; and the topology of the warehouse.
    pub fn load_with(
        &self,
        command_flags: impl FnOnce(&mut ServiceConfig),
    ) -> Result<(ServiceConfig, Arc<TopologyIndex>)> {
        let mut config: ServiceConfig = load_layered(
            ServiceConfig::for_profile(self.profile),
            self.config.as_deref(),
        )?;
        config.profile = self.profile;
        self.broker.apply(&mut config.ingest.kafka);
        if let Some(group) = &self.group {
            config.ingest.group_id.clone_from(group);
        }
        if let Some(instance_id) = &self.instance_id {
            config.ingest.instance_id.clone_from(instance_id);
        }
        if let Some(state_dir) = &self.state_dir {
            config.ingest.state_dir.clone_from(state_dir);
        }
        command_flags(&mut config);
        config.validate().context("invalid configuration")?;
        let topology = Topology::read_served(&self.warehouse.open()?)
            .context("failed to read dim_slot (the topology of lots and slots)")?;
        let index = TopologyIndex::new(topology).context("invalid topology")?;
        Ok((config, Arc::new(index)))
    }
}

/// Opens the warehouse at `path`, creating it if needed (commands that write).
pub fn create_warehouse(path: &std::path::Path) -> Result<Warehouse> {
    Warehouse::create(path)
        .with_context(|| format!("failed to create the warehouse at {}", path.display()))
}

/// The evaluation protocol, shared by `backtest` and `train`.
#[derive(Debug, Args, Clone)]
pub struct ProtocolArgs {
    #[command(flatten)]
    pub location: WarehouseLocation,
    /// Start from a named protocol; the options below override its parts. Default: the data set's
    /// own (birmingham, malaga); for any other source the protocol comes from its data (its cadence
    /// gives the grid, its last week is the test window, earlier weeks are rolling origins).
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// `fact_lot_occupancy.source` to evaluate (birmingham, malaga, melbourne, simulated, csv-<name>).
    /// Default: the preset's data set, else the warehouse's only source, else birmingham.
    #[arg(long)]
    pub source: Option<String>,
    /// Grid step, minutes.
    #[arg(long)]
    pub step: Option<u32>,
    /// Horizons, comma-separated durations (`15m`, `1h`, `24h`, `7d`), multiples of the step.
    #[arg(long, value_delimiter = ',')]
    pub horizons: Option<Vec<String>>,
    /// First local date of the test period.
    #[arg(long)]
    pub test_start: Option<NaiveDate>,
    /// Last local date of the test period (inclusive).
    #[arg(long)]
    pub test_end: Option<NaiveDate>,
    /// Split the test period into rolling windows of this many days, each forecast by models fitted
    /// before its own start (a rest under half a window joins the window before it).
    #[arg(long)]
    pub window_days: Option<u32>,
    /// Also evaluate this many earlier windows as long as the test period (ignored with
    /// --window-days).
    #[arg(long)]
    pub windows: Option<u32>,
    /// Pair origins and targets across midnight too.
    #[arg(long)]
    pub across_days: bool,
    /// Days before each window that calibrate the conformal intervals.
    #[arg(long)]
    pub calibration_days: Option<u32>,
    /// Which residuals calibrate the intervals: those of the target's day type (weekday, Saturday,
    /// Sunday or holiday; pooled while a day type has fewer than 200) or all of them. Default: the
    /// configuration's `intervals.calibration`.
    #[arg(long, value_enum)]
    pub calibration: Option<CalibrationScope>,
    /// Train on at most this many days before each window (default: all history).
    #[arg(long)]
    pub training_days: Option<u32>,
    /// Cap on training rows per horizon (origins are thinned evenly).
    #[arg(long, default_value_t = 400_000)]
    pub max_training_rows: usize,
    /// Learned models to train next to the baselines.
    #[arg(long, value_enum, default_value = "all")]
    pub models: LearnedModels,
    /// The frozen modelling configuration (TOML; default: the one built in,
    /// training/config/parkcast-4.toml). The --gbm-*, --calibration and --no-prior flags override
    /// its knobs, and a trained model's report says which.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Score the validation days only (the calibration days before each window, by models fitted
    /// before them): no test window is fitted or read.
    #[arg(long)]
    pub validation_only: bool,
    /// Boosting rounds of the trees.
    #[arg(long)]
    pub gbm_iterations: Option<usize>,
    /// Learning rate of the trees.
    #[arg(long)]
    pub gbm_learning_rate: Option<f32>,
    /// The trees' loss (default l1).
    #[arg(long, value_enum)]
    pub gbm_objective: Option<GbmObjectiveArg>,
    /// Ensembles per horizon over bagging seeds, averaged (default 1).
    #[arg(long)]
    pub gbm_bagging_seeds: Option<usize>,
    /// Features the trees leave out, comma-separated names (see `parkcast_features::vector`).
    #[arg(long, value_delimiter = ',')]
    pub gbm_exclude: Vec<String>,
    /// Train on this city's rows only: borrow no rows from the other cities the configuration's
    /// `[prior]` names.
    #[arg(long)]
    pub no_prior: bool,
    /// Lots read, featurised and dropped together: peak memory grows with this, not with the
    /// city (a year of 5-minute data is about 6 MB per lot). Results do not depend on it.
    #[arg(long, env = "PARKCAST_GROUP_LOTS", default_value_t = parkcast_training::groups::DEFAULT_GROUP_LOTS)]
    pub group_lots: usize,
    /// Folder for the training matrix while the run lasts (default: the system's temporary
    /// folder); it needs about 8 bytes x 41 columns per training row and horizon.
    #[arg(long, env = "PARKCAST_SCRATCH", value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// Fit on a training matrix built beforehand by shards (`parkcast features plan` with these
    /// same flags, then `parkcast features build --shard I/N` on each worker, e.g. by
    /// scripts/spark/features.py) instead of building the rows here.
    #[arg(long, value_name = "DIR")]
    pub matrix: Option<PathBuf>,
}

/// `--gbm-objective`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GbmObjectiveArg {
    /// Absolute error: the trees fit the median correction.
    L1,
    /// Squared error: the trees fit the mean correction.
    L2,
}

impl ProtocolArgs {
    /// The protocol these flags ask for.
    pub fn request(&self) -> Result<ProtocolRequest> {
        Ok(ProtocolRequest {
            preset: self.preset,
            source: self.source.clone(),
            step_minutes: self.step,
            horizons_minutes: self
                .horizons
                .as_ref()
                .map(|horizons| horizons.iter().map(|text| parse_minutes(text)).collect())
                .transpose()?,
            test_start: self.test_start,
            test_end: self.test_end,
            window_days: self.window_days,
            windows: self.windows,
            across_days: self.across_days,
            calibration_days: self.calibration_days,
            calibration: self.calibration,
            training_days: self.training_days,
            max_training_rows: self.max_training_rows,
            validation_only: self.validation_only,
        })
    }

    /// The backtest configuration these flags describe on `warehouse`, and where it came from.
    pub fn config(
        &self,
        warehouse: &Warehouse,
        frozen: &FrozenConfig,
    ) -> Result<(BacktestConfig, String)> {
        let (mut config, origin) = self.request()?.resolve(warehouse, frozen.calibration())?;
        config.lot_scale = frozen.lot_scale();
        config.group_lots = self.group_lots;
        config.scratch = self.scratch.clone();
        config.matrix = self.matrix.clone();
        Ok((config, origin))
    }

    /// The knobs these flags set over the frozen configuration.
    pub fn knobs(&self) -> Overrides {
        Overrides {
            gbm_iterations: self.gbm_iterations,
            gbm_learning_rate: self.gbm_learning_rate.map(f64::from),
            gbm_objective: self.gbm_objective.map(|objective| match objective {
                GbmObjectiveArg::L1 => Objective::L1,
                GbmObjectiveArg::L2 => Objective::L2,
            }),
            gbm_bagging_seeds: self.gbm_bagging_seeds,
            gbm_exclude: self.gbm_exclude.clone(),
            calibration: self.calibration,
            no_prior: self.no_prior,
        }
    }

    /// The frozen configuration: `--config FILE`, or the one built in.
    pub fn frozen(&self) -> Result<LoadedConfig> {
        Ok(LoadedConfig::load(self.config.as_deref())?)
    }

    /// The knobs set differently from the configuration, as the report lists them.
    pub fn overrides(&self, frozen: &FrozenConfig) -> Vec<String> {
        self.knobs().describe(frozen)
    }

    /// The learned models these flags ask for.
    pub fn models(&self, frozen: &FrozenConfig) -> Result<ModelChoice> {
        Ok(self.knobs().models(frozen, self.models)?)
    }
}

/// A positive duration: `45m`, `2h`, `90s`, `1h30m`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let trimmed = text.trim();
    let duration = humantime::parse_duration(trimmed).with_context(|| {
        format!("{text:?} is not a duration: write e.g. 45m, 2h, 90s, 1h30m or 7d")
    })?;
    if duration.is_zero() {
        bail!("{text:?} is zero; give a positive duration");
    }
    Ok(duration)
}

/// A positive whole number of minutes: a duration (`15m`, `2h`, `7d`) or a bare number of minutes
/// (`45`).
pub fn parse_minutes(text: &str) -> Result<u32> {
    let trimmed = text.trim();
    let duration = match trimmed.parse::<u64>() {
        Ok(minutes) => Duration::from_secs(minutes.saturating_mul(60)),
        Err(_) => parse_duration(trimmed)?,
    };
    if duration.is_zero() || duration.subsec_nanos() != 0 || duration.as_secs() % 60 != 0 {
        bail!("{text:?} is not a positive whole number of minutes");
    }
    u32::try_from(duration.as_secs() / 60).with_context(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        let cases = [
            ("45m", 45 * 60),
            ("2h", 7_200),
            ("90s", 90),
            ("1h30m", 5_400),
            ("1h 0m 5s", 3_605),
            (" 10m ", 600),
            ("1d", 86_400),
            ("1.5h", 5_400),
        ];
        for (text, seconds) in cases {
            assert_eq!(
                parse_duration(text).expect("a valid duration"),
                Duration::from_secs(seconds),
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_durations_are_errors_not_panics() {
        for text in [
            "",
            "45",
            "m",
            "-5m",
            "0m",
            "1,5h",
            "99999999999999999999s",
            "9999999999999999999999h",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn minutes_take_units_or_a_bare_number() {
        assert_eq!(parse_minutes("15m").ok(), Some(15));
        assert_eq!(parse_minutes("2h").ok(), Some(120));
        assert_eq!(parse_minutes("7d").ok(), Some(10_080));
        assert_eq!(parse_minutes("1w").ok(), Some(10_080));
        assert_eq!(parse_minutes("45").ok(), Some(45));
        for text in ["h", "0", "90s", "30s", "", "99999999999999"] {
            assert!(parse_minutes(text).is_err(), "{text:?} should be refused");
        }
    }
}
