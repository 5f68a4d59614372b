//! `parkcast bench`: the speed and memory figures the issues ask for, as tables. The measuring
//! lives in `parkcast-bench`; this module turns flags into its options and prints its reports.
//! Peak memory is the process's high-water mark (`VmHWM`), so run one benchmark per process for a
//! clean figure.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use parkcast_bench::{
    GrpcOptions, H2loadOptions, IngestKafkaOptions, IngestOptions, MelbourneOptions,
    ScoringOptions, SimulateOptions, TrainOptions,
};
use parkcast_kafka::KafkaConfig;

use super::args::BrokerArgs;
use crate::report;

/// Arguments of `parkcast bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub target: BenchTarget,
}

/// What to measure. The flags of each target are its options in `parkcast-bench`.
#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// Simulate a city into a temporary warehouse (issue target: 50 lots x 90 days under 60 s).
    Simulate(SimulateOptions),
    /// Import each whole real data set into a temporary warehouse.
    Import,
    /// Decode + validate + apply sensor messages in process, on one core (issue target: 1M events/s;
    /// the state of 1M slots under 100 MB).
    Ingest(IngestOptions),
    /// Sensor messages through a real broker into live state, end to end (issue target: 200k
    /// events/s), then the restart time from checkpoints vs replaying the topic alone. Needs a broker
    /// (`scripts/test.sh` shows how to start noida-db; the embedded broker keeps too little per
    /// partition for this volume).
    IngestKafka(IngestKafkaOptions),
    /// The whole real Melbourne day replayed into the broker and archived into a warehouse; checks
    /// the archived occupancy against the import's. Needs a broker, like `ingest-kafka`.
    Melbourne(MelbourneOptions),
    /// Backtest and train on a simulated city at 5-minute resolution with every horizon from 15 min
    /// to 7 days (issue target: 200 lots x 1 year completes on 2 cores). Simulates first unless
    /// `--warehouse` points at a simulated city (simulate it in its own process for a clean peak
    /// memory figure).
    Train(TrainOptions),
    /// A running server's `GetAvailability` latency under an open-loop request sweep (issue targets:
    /// p99 under 2 ms at 5k requests/s on loopback, and the rate where p99 crosses 10 ms), and the
    /// produce -> visible delay of a sensor reading (p99 under 100 ms at 10k events/s; needs
    /// `--bootstrap` and `--warehouse`).
    Grpc(Box<GrpcBenchArgs>),
    /// A running server's `GetAvailability` latency under h2load, which multiplexes like gateways
    /// and proxies (several requests per TCP segment; issue target: p99 under 2 ms at 5k
    /// requests/s), with `--with-grpc` next to `bench grpc`'s open-loop sweep in the same run.
    /// Needs h2load (`apt-get install nghttp2-client`).
    H2load(H2loadOptions),
    /// The cost of answering an arrival time: scoring the model directly (a feature vector and the
    /// trees per horizon) vs interpolating one target from the lot's ready forecast, which is what
    /// the server does per request. Uses a published model and its warehouse (`parkcast demo`
    /// leaves both in out/demo).
    Scoring(ScoringOptions),
    /// The ETL from the operational store at volume: a simulated city's backend grown to
    /// `--payments` (default 10M) in a database of its own on the `--postgres` server, loaded
    /// whole, then again after 1% new payments (rows/s, wall time, peak memory per stage).
    Etl(parkcast_bench::EtlOptions),
}

/// Arguments of `parkcast bench grpc`.
#[derive(Debug, Args)]
pub struct GrpcBenchArgs {
    #[command(flatten)]
    pub options: GrpcOptions,
    /// The broker the server reads; without it the produce -> visible part is skipped.
    #[command(flatten)]
    pub broker: BrokerArgs,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let report = match args.target {
        BenchTarget::Simulate(options) => parkcast_bench::simulate(&options)?,
        BenchTarget::Import => parkcast_bench::import()?,
        BenchTarget::Train(options) => parkcast_bench::train(&options)?,
        BenchTarget::Ingest(options) => parkcast_bench::ingest(&options)?,
        BenchTarget::IngestKafka(options) => parkcast_bench::ingest_kafka(&options)?,
        BenchTarget::Melbourne(options) => {
            let melbourne = parkcast_bench::melbourne(&options)?;
            println!("{}", report::archive_table(&melbourne.archive));
            println!("{}", melbourne.report);
            if melbourne.differing_rows > 0 {
                bail!(
                    "{} archived occupancy rows differ from the import",
                    melbourne.differing_rows
                );
            }
            return Ok(());
        }
        BenchTarget::Grpc(grpc) => parkcast_bench::grpc(&grpc_options(*grpc))?,
        BenchTarget::H2load(options) => parkcast_bench::h2load(&options)?,
        BenchTarget::Scoring(options) => parkcast_bench::scoring(&options)?,
        BenchTarget::Etl(options) => parkcast_bench::etl(&options)?,
    };
    println!("{report}");
    Ok(())
}

fn grpc_options(args: GrpcBenchArgs) -> GrpcOptions {
    // The produce -> visible part runs only against a broker given on the command line.
    let kafka = args.broker.bootstrap.is_some().then(|| {
        let mut kafka = KafkaConfig::default();
        args.broker.apply(&mut kafka);
        kafka
    });
    GrpcOptions {
        kafka,
        ..args.options
    }
}
