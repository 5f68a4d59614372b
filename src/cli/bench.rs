//! `parkcast bench`: the speed and memory figures the issues ask for, as tables. The measuring
//! lives in `parkcast-bench`; this module turns flags into its options and prints its reports.
//! Peak memory is the process's high-water mark (`VmHWM`), so run one benchmark per process for a
//! clean figure.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use parkcast_bench::{
    GrpcOptions, H2loadOptions, IngestKafkaOptions, IngestOptions, MelbourneOptions,
    ScoringOptions, SimulateOptions, TrainOptions,
};
use parkcast_kafka::KafkaConfig;

use super::BrokerArgs;
use crate::report;

/// Arguments of `parkcast bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub target: BenchTarget,
}

/// What to measure.
#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// Simulate a city into a temporary warehouse (issue target: 50 lots x 90 days under 60 s).
    Simulate {
        /// Lots.
        #[arg(long, default_value_t = 50)]
        lots: u32,
        /// Days.
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
    /// Import each whole real data set into a temporary warehouse.
    Import,
    /// Decode + validate + apply sensor messages in process, on one core (issue target: 1M events/s;
    /// the state of 1M slots under 100 MB).
    Ingest {
        /// Lots.
        #[arg(long, default_value_t = 1_000)]
        lots: u32,
        /// Slots per lot.
        #[arg(long, default_value_t = 1_000)]
        slots: u32,
        /// Messages to apply.
        #[arg(long, default_value_t = 4_000_000)]
        events: u32,
    },
    /// Sensor messages through a real broker into live state, end to end (issue target: 200k
    /// events/s), then the restart time from checkpoints vs replaying the topic alone. Needs a broker
    /// (`scripts/test.sh` shows how to start noida-db; the embedded broker keeps too little per
    /// partition for this volume).
    IngestKafka {
        /// Brokers.
        #[arg(long, env = "PARKCAST_KAFKA_BOOTSTRAP")]
        bootstrap: String,
        /// Lots.
        #[arg(long, default_value_t = 200)]
        lots: u32,
        /// Slots per lot.
        #[arg(long, default_value_t = 500)]
        slots: u32,
        /// Readings per slot.
        #[arg(long, default_value_t = 20)]
        rounds: u32,
        /// Partitions per topic.
        #[arg(long, default_value_t = 8)]
        partitions: i32,
    },
    /// The whole real Melbourne day replayed into the broker and archived into a warehouse; checks
    /// the archived occupancy against the import's. Needs a broker, like `ingest-kafka`.
    Melbourne {
        /// Brokers.
        #[arg(long, env = "PARKCAST_KAFKA_BOOTSTRAP")]
        bootstrap: String,
        /// Partitions per topic.
        #[arg(long, default_value_t = 8)]
        partitions: i32,
    },
    /// Backtest and train on a simulated city at 5-minute resolution with every horizon from 15 min
    /// to 7 days (issue target: 200 lots x 1 year completes on 2 cores). Simulates first unless
    /// `--warehouse` points at a simulated city (simulate it in its own process for a clean peak
    /// memory figure).
    Train {
        /// Lots.
        #[arg(long, default_value_t = 200)]
        lots: u32,
        /// Days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// An existing warehouse holding a simulated city.
        #[arg(long)]
        warehouse: Option<PathBuf>,
        /// Cap on training rows per horizon.
        #[arg(long, default_value_t = 400_000)]
        max_training_rows: usize,
    },
    /// A running server's `GetAvailability` latency under an open-loop request sweep (issue targets:
    /// p99 under 2 ms at 5k requests/s on loopback, and the rate where p99 crosses 10 ms), and the
    /// produce -> visible delay of a sensor reading (p99 under 100 ms at 10k events/s; needs
    /// `--bootstrap` and `--warehouse`).
    Grpc(GrpcBenchArgs),
    /// A running server's `GetAvailability` latency under h2load, which multiplexes like gateways
    /// and proxies (several requests per TCP segment; issue target: p99 under 2 ms at 5k
    /// requests/s), with `--with-grpc` next to `bench grpc`'s open-loop sweep in the same run.
    /// Needs h2load (`apt-get install nghttp2-client`).
    H2load(H2loadBenchArgs),
    /// The cost of answering an arrival time: scoring the model directly (a feature vector and the
    /// trees per horizon) vs interpolating one target from the lot's ready forecast, which is what
    /// the server does per request. Uses a published model and its warehouse (`parkcast demo`
    /// leaves both in out/demo).
    Scoring {
        /// The warehouse the model learned from.
        #[arg(long, short = 'w', default_value = "out/demo/warehouse")]
        warehouse: PathBuf,
        /// The model registry.
        #[arg(long, default_value = "out/demo/models")]
        registry: PathBuf,
        /// The model line (its newest version is used).
        #[arg(long, default_value = "simulated")]
        model: String,
    },
}

/// Arguments of `parkcast bench grpc` (see [`GrpcOptions`] for what each does).
#[derive(Debug, Args)]
pub struct GrpcBenchArgs {
    /// Server address.
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "PARKCAST_GRPC_ADDR"
    )]
    pub addr: String,
    /// Warehouse the server serves (its `dim_slot` lists the lots and slots); needed for the
    /// produce -> visible part.
    #[arg(long, short = 'w')]
    pub warehouse: Option<PathBuf>,
    /// Lots to ask about (comma-separated; default: every lot of --warehouse).
    #[arg(long, value_delimiter = ',')]
    pub lots: Vec<String>,
    /// Horizons asked for, minutes ahead (comma-separated). When the server refuses horizons
    /// (no scoring path yet), the sweep asks for the live picture only and says so.
    #[arg(long, value_delimiter = ',', default_value = "30,60")]
    pub horizons: Vec<u32>,
    /// Ask for the live picture only (no horizons).
    #[arg(long)]
    pub now_only: bool,
    /// Target request rates of the sweep, requests/s (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2000,5000,10000,15000,20000,30000,40000"
    )]
    pub rates: Vec<u32>,
    /// Measured seconds per rate (after a 0.5 s warm-up).
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Skip the request sweep (only produce -> visible).
    #[arg(long)]
    pub no_sweep: bool,
    /// The broker the server reads; without it the produce -> visible part is skipped.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Heartbeats produced per second during the produce -> visible part.
    #[arg(long, default_value_t = 10_000)]
    pub event_rate: u32,
    /// Probes (produced flips) per second.
    #[arg(long, default_value_t = 20)]
    pub probes: u32,
    /// Seconds of the produce -> visible part.
    #[arg(long, default_value_t = 10.0)]
    pub visibility_seconds: f64,
}

/// Arguments of `parkcast bench h2load` (see [`H2loadOptions`] for what each does).
#[derive(Debug, Args)]
pub struct H2loadBenchArgs {
    /// Server address.
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "PARKCAST_GRPC_ADDR"
    )]
    pub addr: String,
    /// The lot asked about (h2load sends the same request every time).
    #[arg(long)]
    pub lot: String,
    /// Horizons asked for, minutes ahead (comma-separated). When the server refuses horizons (no
    /// model active), the live picture is asked for instead, and the output says so.
    #[arg(long, value_delimiter = ',', default_value = "30,60")]
    pub horizons: Vec<u32>,
    /// Ask for the live picture only (no horizons).
    #[arg(long)]
    pub now_only: bool,
    /// Total request rates, requests/s (comma-separated), each shared evenly by the connections.
    #[arg(long, value_delimiter = ',', default_value = "5000")]
    pub rates: Vec<u32>,
    /// HTTP/2 connections (h2load `-c`).
    #[arg(long, default_value_t = 4)]
    pub connections: u32,
    /// Streams in flight per connection at most (h2load `-m`).
    #[arg(long, default_value_t = 10)]
    pub streams: u32,
    /// Measured seconds per rate (after a 0.5 s warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// The h2load binary (Debian and Ubuntu: `apt-get install nghttp2-client`).
    #[arg(long, default_value = "h2load", env = "PARKCAST_H2LOAD")]
    pub h2load: PathBuf,
    /// Also run `parkcast bench grpc`'s open-loop sweep at the same rates, same lot and request,
    /// same connection count, and print both in one table.
    #[arg(long)]
    pub with_grpc: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let report = match args.target {
        BenchTarget::Simulate { lots, days } => {
            parkcast_bench::simulate(&SimulateOptions { lots, days })?
        }
        BenchTarget::Import => parkcast_bench::import()?,
        BenchTarget::Train {
            lots,
            days,
            warehouse,
            max_training_rows,
        } => parkcast_bench::train(&TrainOptions {
            lots,
            days,
            warehouse,
            max_training_rows,
        })?,
        BenchTarget::Ingest {
            lots,
            slots,
            events,
        } => parkcast_bench::ingest(&IngestOptions {
            lots,
            slots,
            events,
        })?,
        BenchTarget::IngestKafka {
            bootstrap,
            lots,
            slots,
            rounds,
            partitions,
        } => parkcast_bench::ingest_kafka(&IngestKafkaOptions {
            bootstrap,
            lots,
            slots,
            rounds,
            partitions,
        })?,
        BenchTarget::Melbourne {
            bootstrap,
            partitions,
        } => {
            let melbourne = parkcast_bench::melbourne(&MelbourneOptions {
                bootstrap,
                partitions,
            })?;
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
        BenchTarget::Grpc(grpc) => parkcast_bench::grpc(&grpc_options(grpc))?,
        BenchTarget::H2load(h2load) => parkcast_bench::h2load(&h2load_options(h2load))?,
        BenchTarget::Scoring {
            warehouse,
            registry,
            model,
        } => parkcast_bench::scoring(&ScoringOptions {
            warehouse,
            registry,
            model,
        })?,
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
        addr: args.addr,
        warehouse: args.warehouse,
        lots: args.lots,
        horizons: args.horizons,
        now_only: args.now_only,
        rates: args.rates,
        seconds: args.seconds,
        connections: args.connections,
        sweep: !args.no_sweep,
        kafka,
        event_rate: args.event_rate,
        probes: args.probes,
        visibility_seconds: args.visibility_seconds,
    }
}

fn h2load_options(args: H2loadBenchArgs) -> H2loadOptions {
    H2loadOptions {
        addr: args.addr,
        lot: args.lot,
        horizons: args.horizons,
        now_only: args.now_only,
        rates: args.rates,
        connections: args.connections,
        streams: args.streams,
        seconds: args.seconds,
        h2load: args.h2load,
        with_grpc: args.with_grpc,
    }
}
