//! Command-line arguments and dispatch.

mod archive;
mod args;
mod backtest;
mod bench;
mod demo;
mod etl;
mod features;
mod import;
mod ingest;
mod models;
mod opstore;
mod query;
mod reconcile;
mod replay;
mod retrain;
mod serve;
mod simulate;
mod train;
mod tune;
mod warehouse;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

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
    /// Continuous training with a promotion gate: train a candidate on the warehouse (archived live
    /// data plus history), publish it to a candidate line, judge it against the serving model on
    /// the latest days and, with --addr, live in shadow on the server; activate it only if it is
    /// better by the margin both ways, else keep the serving model and say why. For cron or a
    /// Kubernetes CronJob (deploy/retrain-cronjob.yaml).
    Retrain(retrain::RetrainArgs),
    /// Search the trees' hyperparameters with a fixed budget on the validation days only of one or
    /// more sources (never a test window), print every trial and the winner, optionally ablate
    /// feature groups and model changes, and write the winner as a configuration file with its
    /// selection log.
    Tune(tune::TuneArgs),
    /// Build training matrices in shards for a city too large for one machine: `plan` once, then
    /// `build --shard I/N` on each worker (scripts/spark/features.py runs them on Apache Spark),
    /// then `train --matrix DIR` with the same flags.
    Features(features::FeaturesArgs),
    /// List the model registry, show one version's manifest, or activate a version on a running
    /// server.
    Models(models::ModelsArgs),
    /// Show what a warehouse holds: files, rows, bytes and date range per table.
    Warehouse(warehouse::WarehouseArgs),
    /// The operator's transactional database in Postgres (customers, vehicles, tariffs, payments,
    /// refunds, penalties): migrate its schema, or show its version.
    Opstore(opstore::OpStoreArgs),
    /// Load what changed in the operational store since the last run (everything, the first
    /// time) into a warehouse: customers, vehicles, tariffs, payments with their refunds, and
    /// penalties. Incremental by transaction window, exactly once across crashes: a run killed
    /// anywhere is simply run again.
    Etl(etl::EtlArgs),
    /// Join the payments `parkcast etl` loaded with the sensor archive's stays: each stay gets
    /// its payments, tariff and fines, and the exceptions are counted, valued and listed (stays
    /// without payment, payments that failed, payments without a stay, overstays fined or not)
    /// as CSV files beside a summary.
    Reconcile(reconcile::ReconcileArgs),
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
    /// health, reflection) and the same answers as REST/JSON, the pricing feed and Prometheus
    /// metrics, with hot model reload.
    Serve(serve::ServeArgs),
    /// Ask a running server: lots now and ahead, nearby search, live watch, served models (table
    /// or --json).
    Query(query::QueryArgs),
    /// Measure speed and memory of the main paths on real inputs, printed as a table.
    Bench(bench::BenchArgs),
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
        Command::Opstore(args) => opstore::run(args),
        Command::Etl(args) => etl::run(args, &cli.global),
        Command::Reconcile(args) => reconcile::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Backtest(args) => backtest::run(args, &cli.global),
        Command::Train(args) => train::run(args, &cli.global),
        Command::Retrain(args) => retrain::run(args, &cli.global),
        Command::Tune(args) => tune::run(args, &cli.global),
        Command::Features(args) => features::run(args, &cli.global),
        Command::Models(args) => models::run(args),
        Command::Replay(args) => replay::run(args, &cli.global),
        Command::Ingest(args) => ingest::run(args, &cli.global),
        Command::Archive(args) => archive::run(args, &cli.global),
        Command::Serve(args) => serve::run(args, &cli.global),
        Command::Query(args) => query::run(args),
    }
}
