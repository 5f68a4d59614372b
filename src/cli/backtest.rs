//! `parkcast backtest`: every baseline and learned model, per horizon, on a source's lot occupancy.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use clap::{Args, ValueEnum};
use parkcast_features::conformal::CalibrationScope;
use parkcast_training::backtest::{self, BacktestConfig, ModelChoice};
use parkcast_training::frozen::{FrozenConfig, LearnedModels, LoadedConfig, Overrides};
use parkcast_training::model::Objective;
use parkcast_training::protocol::{Preset, ProtocolRequest};
use parkcast_training::summary;
use parkcast_warehouse::Warehouse;

use super::duration::parse_minutes;
use super::{GlobalArgs, WarehouseLocation};
use crate::progress::BarProgress;

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
    /// before its own start.
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
    /// training/config/parkcast-2.toml). The --gbm-* and --calibration flags override its knobs,
    /// and a trained model's report says which.
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
        Ok(self.request()?.resolve(warehouse, frozen.calibration())?)
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

/// Arguments of `parkcast backtest`. Defaults are the Birmingham protocol of the reference figures.
#[derive(Debug, Args)]
pub struct BacktestArgs {
    #[command(flatten)]
    pub protocol: ProtocolArgs,
    /// Also print each lot's MAE for the best learned model and persistence + profile change, worst
    /// lots first.
    #[arg(long)]
    pub per_lot: bool,
}

pub fn run(args: BacktestArgs, global: &GlobalArgs) -> Result<()> {
    let warehouse = args.protocol.location.open()?;
    let frozen = args.protocol.frozen()?;
    let (config, origin) = args.protocol.config(&warehouse, &frozen.config)?;
    println!("protocol: {origin}");
    println!(
        "{}",
        summary::configuration(&frozen, &args.protocol.overrides(&frozen.config))
    );
    let models = args.protocol.models(&frozen.config)?;
    let started = std::time::Instant::now();
    let outcome = BarProgress::run(global.quiet, |progress| {
        backtest::backtest(&warehouse, &config, &models, progress)
    })
    .context("backtest failed")?;
    println!("{}", summary::backtest(&outcome, &config));
    println!("({:.1} s)", started.elapsed().as_secs_f64());
    if args.per_lot {
        println!("{}", summary::per_lot_table(&outcome, &config));
    }
    Ok(())
}
