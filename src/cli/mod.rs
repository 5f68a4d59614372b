//! Command-line arguments and dispatch.

mod archive;
mod backtest;
mod bench;
mod demo;
mod duration;
mod import;
mod ingest;
mod models;
mod query;
mod replay;
mod serve;
mod simulate;
mod train;
mod tune;
mod warehouse;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use parkcast_kafka::{KafkaConfig, TopicNames};
use parkcast_serving::config::{Profile, ServiceConfig, load_layered};
use parkcast_serving::topology::TopologyIndex;
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::topology::Topology;

/// parkcast predicts free parking slots.
///
/// An offline trainer learns occupancy forecasts from a star-schema warehouse (Parquet); a server scores
/// live sensor streams. Start with `parkcast demo`, which builds a warehouse from a simulated city and
/// the real open data sets and prints what it holds.
#[derive(Debug, Parser)]
#[command(name = "parkcast", version, about, long_about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log filter (`error`, `warn`, `info`, `debug`, or a tracing directive); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info", env = "PARKCAST_LOG")]
    pub log_level: String,
    /// Log as JSON lines (for log shippers).
    #[arg(long, global = true, env = "PARKCAST_LOG_JSON")]
    pub log_json: bool,
    /// No progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the product end to end on built-in data: simulate a city, import the real data sets,
    /// backtest Birmingham, train the city's model, then serve it live (gRPC, pricing feed) while
    /// the city's last day streams through an in-process Kafka broker, with a live table of lots
    /// until Ctrl-C.
    Demo(demo::DemoArgs),
    /// Simulate a city (lots, slots, customers, sensors, payments) into a warehouse.
    Simulate(simulate::SimulateArgs),
    /// Import real occupancy data (Birmingham, Málaga, Melbourne, or a generic CSV) into a warehouse.
    Import(import::ImportArgs),
    /// Backtest the baselines (persistence, seasonal naive, profile, persistence + profile change) and
    /// the learned models (elastic net, gradient-boosted trees) on a source's lot occupancy with
    /// rolling origins: MAE and RMSE per horizon and per lot, in rate and in slots, and the coverage
    /// of the conformal intervals.
    Backtest(backtest::BacktestArgs),
    /// Backtest, promote the best learned model, refit it on all data and publish it with its report
    /// to the model registry (`models/<name>/<version>/`).
    Train(train::TrainArgs),
    /// Search the trees' hyperparameters with a fixed budget on the validation days only of one or
    /// more sources (never a test window), print every trial and the winner, optionally ablate
    /// feature groups and model changes, and write the winner as a configuration file with its
    /// selection log.
    Tune(tune::TuneArgs),
    /// List the model registry, show one version's manifest, or activate a version on a running
    /// server.
    Models(models::ModelsArgs),
    /// Show what a warehouse holds: files, rows, bytes and date range per table.
    Warehouse(warehouse::WarehouseArgs),
    /// Produce a warehouse's events (a simulated city, or the real Melbourne day with heartbeats)
    /// into the Kafka topics, in real time or accelerated.
    Replay(replay::ReplayArgs),
    /// Consume the sensor and session topics into live per-slot state (the server's ingestion on
    /// its own): dead letters, checkpoints, consumer-group rebalancing, Prometheus metrics.
    Ingest(ingest::IngestArgs),
    /// Append the topics to a warehouse's fact tables exactly once and roll lot occupancy forward,
    /// so `parkcast train` can learn from archived live data.
    Archive(archive::ArchiveArgs),
    /// The server: live ingestion, scoring with the active model, gRPC (Availability, Models,
    /// health, reflection), the pricing feed and Prometheus metrics, with hot model reload.
    Serve(serve::ServeArgs),
    /// Ask a running server: lots now and ahead, nearby search, live watch, served models (table
    /// or --json).
    Query(query::QueryArgs),
    /// Measure speed and memory of the main paths on real inputs, printed as a table.
    Bench(bench::BenchArgs),
}

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
    ) -> Result<(ServiceConfig, std::sync::Arc<TopologyIndex>)> {
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
        Ok((config, std::sync::Arc::new(index)))
    }
}

/// Opens the warehouse at `path`, creating it if needed (commands that write).
pub fn create_warehouse(path: &std::path::Path) -> Result<Warehouse> {
    Warehouse::create(path)
        .with_context(|| format!("failed to create the warehouse at {}", path.display()))
}

/// The runtime of the commands that call a server ([`parkcast_client`]): one thread, as a client
/// does one thing at a time.
fn client_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(args, &cli.global),
        Command::Simulate(args) => simulate::run(args, &cli.global),
        Command::Import(args) => import::run(args, &cli.global),
        Command::Warehouse(args) => warehouse::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Backtest(args) => backtest::run(args, &cli.global),
        Command::Train(args) => train::run(args, &cli.global),
        Command::Tune(args) => tune::run(args, &cli.global),
        Command::Models(args) => models::run(args),
        Command::Replay(args) => replay::run(args, &cli.global),
        Command::Ingest(args) => ingest::run(args, &cli.global),
        Command::Archive(args) => archive::run(args, &cli.global),
        Command::Serve(args) => serve::run(args, &cli.global),
        Command::Query(args) => query::run(args),
    }
}
