//! `parkcast demo`: the product end to end on built-in data.
//!
//! A simulated city plus the three real data sets in one warehouse; Birmingham backtested against
//! every baseline (the real-data proof); the city's own model trained (15 minutes to 7 days ahead)
//! and published to the demo's registry; then the product live on an in-process Kafka broker (the
//! real protocol on a local port, open to outside clients): the server started on the history
//! before the city's last day, that day replayed into the topics, and a table of lots (free now,
//! forecast at 30 minutes and an hour with intervals, trend) refreshed every second until Ctrl-C,
//! while `parkcast query` can ask the same server over gRPC.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use parkcast_training::backtest::BacktestConfig;
use parkcast_training::registry::Registry;
use parkcast_training::simulate::{self, SimulationParams};
use parkcast_training::train::{TrainConfig, train};

use super::GlobalArgs;
use crate::progress::BarProgress;
use crate::report;

/// Arguments of `parkcast demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the demo's warehouse.
    #[arg(long, default_value = "out/demo/warehouse")]
    pub out: PathBuf,
    /// Lots of the simulated city.
    #[arg(long, default_value_t = 20)]
    pub lots: u32,
    /// Days of the simulated city.
    #[arg(long, default_value_t = 28)]
    pub days: u32,
    /// Skip the real data sets (for machines without ../shared/datasets).
    #[arg(long)]
    pub no_real_data: bool,
    /// Model registry of the demo.
    #[arg(long, default_value = "out/demo/models")]
    pub models: PathBuf,
    /// gRPC address of the live server.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub grpc_addr: std::net::SocketAddr,
    /// HTTP address of the live server: Prometheus `/metrics` and the REST/JSON API.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: std::net::SocketAddr,
    /// Replay speed of the city's last day: 600 plays an hour in 6 seconds.
    #[arg(long, default_value_t = 600.0)]
    pub speed: f64,
    /// Stop the live part after this many seconds (default: run until Ctrl-C).
    #[arg(long = "for", value_name = "SECONDS")]
    pub run_for: Option<f64>,
    /// Lots shown in the live table.
    #[arg(long, default_value_t = 12)]
    pub rows: usize,
    /// A broker to use instead of the in-process one (topics are created, 4 partitions each).
    #[command(flatten)]
    pub broker: super::args::BrokerArgs,
    /// Also run the operator's side on this Postgres server: the demo (re)creates the database
    /// `parkcast_demo` there, writes the city's customers, tariffs (street, shopping and commuter
    /// prices changed in different weeks), payments, refunds and penalties to it, loads them with
    /// the ETL, reconciles them with the stays, and trains the served model with the price
    /// response a what-if asks (`parkcast query --price`). No environment variable on purpose.
    #[arg(long, value_name = "DSN")]
    pub postgres: Option<String>,
}

pub fn run(args: DemoArgs, global: &GlobalArgs) -> Result<()> {
    let warehouse = super::args::create_warehouse(&args.out)?;

    println!(
        "1/5  simulating {} lots for {} days into {}",
        args.lots,
        args.days,
        args.out.display()
    );
    let params = SimulationParams {
        timezone: DEMO_TIMEZONE,
        holiday_region: "GB-ENG".to_owned(),
        pii_key: std::env::var("PARKCAST_PII_KEY")
            .unwrap_or_else(|_| "parkcast-simulator".to_owned()),
        ..SimulationParams::default()
    }
    .seed(42)
    .lots(args.lots)
    .days(args.days)
    .start_date(demo_start())
    .occupancy_interval_minutes(5)
    .heartbeat_minutes(120)
    .silence_minutes(DEMO_SILENCE_MINUTES);
    let mut backend = args.postgres.as_deref().map(demo_backend).transpose()?;
    let params = SimulationParams {
        tariff_changes: if backend.is_some() {
            demo_price_changes(args.days)
        } else {
            Vec::new()
        },
        ..params
    };
    let checked = params.check().context("invalid simulation parameters")?;
    let outcome = BarProgress::run(global.quiet, |progress| {
        let sink = backend
            .as_mut()
            .map(|(backend, _)| backend as &mut dyn simulate::TransactionSink);
        simulate::simulate_with(&checked, &warehouse, progress, sink)
    })
    .context("simulation failed")?;
    println!("{}", report::simulation_table(&outcome));
    if let Some((backend, config)) = backend {
        println!("{}", report::backend_table(&backend.counts()));
        drop(backend);
        operator_side(&config, &warehouse, global)?;
    }

    if args.no_real_data {
        println!("2/5  skipping the real data sets (--no-real-data)");
    } else {
        println!("2/5  importing the real data sets (Birmingham, Málaga, Melbourne)");
        for source in parkcast_training::datasets::all() {
            let report = BarProgress::run(global.quiet, |progress| {
                parkcast_training::import::import(&source, &warehouse, progress)
            })
            .with_context(|| format!("failed to import {}", source.writer_name()))?;
            println!("{}", report::import_summary(&report));
        }
    }

    println!("\nThe warehouse at {} now holds:", args.out.display());
    println!(
        "{}",
        report::warehouse_table(
            &warehouse
                .summary()
                .context("failed to read the warehouse")?
        )
    );

    // The real-data proof: Birmingham's reference protocol, every baseline and model.
    if args.no_real_data {
        println!("3/5  skipping the Birmingham backtest (--no-real-data)");
    } else {
        println!(
            "3/5  training on Birmingham (real data): backtest of every baseline and model, the promoted model to {}",
            args.models.display()
        );
        train_and_report(
            &warehouse,
            &args.models,
            BacktestConfig::birmingham(),
            global,
        )?;
    }
    // The model served live: the simulated city, horizons from 15 minutes to a week.
    let city =
        parkcast_training::protocol::simulated_city(simulate::SOURCE, demo_start(), args.days);
    println!(
        "4/5  training the simulated city's model (15 min to 7 days ahead; the one served live) to {}",
        args.models.display()
    );
    let model = train_and_report(&warehouse, &args.models, city, global)?;
    live_stage(&args, &warehouse, &model)?;
    println!(
        "Next: `parkcast models list --registry {}`, `parkcast backtest -w {} --per-lot`, `parkcast serve --help`, or read the warehouse with polars (see notebooks/).",
        args.models.display(),
        args.out.display()
    );
    Ok(())
}

/// Backtests and publishes one source's promoted model, printing the summary; returns the model
/// line's name.
fn train_and_report(
    warehouse: &parkcast_warehouse::Warehouse,
    models: &std::path::Path,
    backtest: BacktestConfig,
    global: &GlobalArgs,
) -> Result<String> {
    // The one frozen configuration, as on every data set.
    let frozen = parkcast_training::frozen::LoadedConfig::embedded();
    let config = TrainConfig {
        name: backtest.source.clone(),
        backtest: BacktestConfig {
            calibration: frozen.config.calibration(),
            lot_scale: frozen.config.lot_scale(),
            ..backtest
        },
        models: frozen.config.models(),
        // The demo serves whatever it trained (and says so below when it loses to the baseline).
        publish_losing: true,
        frozen: Some(frozen.record(Vec::new())),
    };
    let outcome = BarProgress::run(global.quiet, |progress| {
        train(warehouse, &Registry::open(models), &config, progress)
    })
    .context("training failed")?;
    println!(
        "{}",
        parkcast_training::summary::backtest(&outcome.backtest, &config.backtest)
    );
    let manifest = &outcome.published.manifest;
    if !outcome.beats_baseline {
        println!(
            "note: {} does NOT beat persistence + profile change at every horizon; the demo serves it anyway",
            outcome.promoted
        );
    }
    println!(
        "promoted {}: published {} v{} to {} (report.md with plots inside)",
        outcome.promoted,
        manifest.card.name,
        manifest.version,
        outcome.published.dir.display()
    );
    if let Some(response) = &manifest.card.price_response {
        println!(
            "price response: arrivals scale with price to the power {:.2} (s.e. {:.2}); ask a what-if with `parkcast query --lot LOT --horizons 60 --price P`",
            response.elasticity, response.standard_error
        );
    }
    Ok(manifest.card.name.clone())
}

/// Step 5: the product live. An in-process broker (or `--bootstrap`); the server (ingestion,
/// scoring with the city's model, gRPC, pricing feed, metrics) started on the history before 06:00
/// of the city's last day; the day from then replayed into the topics at `--speed`; a table of lots
/// refreshed every second until Ctrl-C.
fn live_stage(
    args: &DemoArgs,
    warehouse: &parkcast_warehouse::Warehouse,
    model: &str,
) -> Result<()> {
    use std::io::IsTerminal as _;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use parkcast_archive::replay::{Background, Speed};
    use parkcast_archive::source::{EventSource, SourceConfig};
    use parkcast_kafka::KafkaConfig;
    use parkcast_serving::config::{ClockMode, ServiceConfig};
    use parkcast_serving::topology::TopologyIndex;

    let mut kafka = KafkaConfig::default();
    let embedded = if args.broker.bootstrap.is_some() {
        args.broker.apply(&mut kafka);
        parkcast_kafka::create_topics(&kafka, &kafka.topics.all(), 4, Duration::from_secs(30))
            .context("failed to create the topics")?;
        None
    } else {
        Some(
            parkcast_kafka::EmbeddedBroker::start_for(&mut kafka, 4)
                .context("failed to start the embedded Kafka broker")?,
        )
    };
    // From 06:00 on the city's last day: the morning fills the lots while the table watches.
    let last_day_start = local_day_start(args)? + 6 * 3_600_000;
    let city: Vec<(String, Vec<String>)> =
        parkcast_warehouse::topology::Topology::read_served(warehouse)?
            .into_iter()
            .filter(|(lot, _)| lot.starts_with("sim:"))
            .collect();
    let lot_ids: std::collections::BTreeSet<String> =
        city.iter().map(|(lot, _)| lot.clone()).collect();
    let topology = Arc::new(TopologyIndex::new(city).context("invalid topology")?);
    let state_dir = args.out.with_file_name("serving-state");
    let _ = std::fs::remove_dir_all(&state_dir);
    let mut config = ServiceConfig::default();
    config.ingest.kafka = kafka.clone();
    config.ingest.group_id = "parkcast-demo".to_owned();
    config.ingest.state_dir = state_dir;
    config.ingest.probe_interval_ms = 200;
    // The simulated sensors repeat themselves every 120 minutes; silence as the simulation.
    config.ingest.silence_ms = i64::from(DEMO_SILENCE_MINUTES) * 60_000;
    config.serve.grpc_addr = args.grpc_addr;
    config.serve.metrics_addr = args.metrics_addr;
    config.serve.registry.clone_from(&args.models);
    config.serve.model = model.to_owned();
    config.serve.clock = ClockMode::Stream;
    // Night-time bays only send their two-hourly heartbeat: stale after two and a half hours.
    config.serve.lot_stale_after_ms = 150 * 60_000;
    config.validate().context("invalid demo configuration")?;

    println!(
        "5/5  live: the city's last day replayed at {}x through {} Kafka broker ({}) into the server",
        args.speed,
        if embedded.is_some() {
            "an in-process"
        } else {
            "the"
        },
        kafka.bootstrap_servers
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async {
        let server = parkcast_serving::server::Server::start(parkcast_serving::server::ServerOptions {
            config,
            topology: Arc::clone(&topology),
            warehouse: warehouse.clone(),
            history_until_ms: Some(last_day_start),
        })
        .await?;
        let source = EventSource::new(
            warehouse,
            SourceConfig {
                start_ms: Some(last_day_start),
                lots: Some(lot_ids),
                ..SourceConfig::default()
            },
        )
        .context("failed to read the city's events")?;
        let replay = Background::spawn(kafka.clone(), source, Speed::Factor(args.speed))
            .context("failed to start the replay")?;
        let address = server.grpc_addr;
        let first_lot = topology.lots().first().map_or("sim:lot0000", |lot| lot.lot_id.as_str());
        let banner = format!(
            "gRPC on {address} (health, reflection, Availability, Models); metrics on http://{http}/metrics\n\
             REST/JSON on http://{http}/v1 (OpenAPI: http://{http}/openapi.json)\n\
             operations page: http://{http}/  (open it in a browser)\n\
             try:  parkcast query --addr http://{address} --lot {first_lot} --horizons 30,60\n\
             \x20     parkcast query --addr http://{address} watch --lot {first_lot}\n\
             \x20     curl 'http://{http}/v1/lots/{first_lot}/availability?horizon_minutes=30,60'\n\
             Ctrl-C stops.",
            http = server.metrics_addr
        );
        println!("{banner}");
        let interactive = std::io::stdout().is_terminal();
        let started = Instant::now();
        let mut shutdown = std::pin::pin!(parkcast_serving::server::shutdown_signal());
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let mut last_print = None::<Instant>;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = ticker.tick() => {}
            }
            let done = args
                .run_for
                .is_some_and(|seconds| started.elapsed().as_secs_f64() >= seconds);
            // On a terminal the table redraws in place every second; in a log, every 10 s.
            if interactive || done || last_print.is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(10)) {
                if interactive {
                    println!("\x1b[2J\x1b[H{banner}");
                }
                let lots: Vec<_> = (0..topology.lots().len().min(args.rows))
                    .filter_map(|lot| u32::try_from(lot).ok())
                    .collect();
                println!(
                    "{}",
                    live_table(server.context(), &lots, replay.sent())
                );
                last_print = Some(Instant::now());
            }
            if done {
                break;
            }
        }
        let mut replayed = replay.sent();
        // A producer stuck on an unresponsive broker must not hold the exit: 15 s, then left behind.
        match tokio::task::spawn_blocking(|| replay.stop(Duration::from_secs(15))).await {
            Ok(Some(Ok(stats))) => replayed = stats.total(),
            Ok(Some(Err(error))) => tracing::warn!(error = %error, "the replay failed"),
            Ok(None) => tracing::warn!("the replay did not stop within 15 s; leaving it behind"),
            Err(error) => tracing::warn!(error = %error, "the replay's stop panicked"),
        }
        let summary = server.shutdown().await?;
        println!(
            "stopped: {} messages replayed, {} handled by the server, {} dead letters (the simulator's duplicates and late readings)",
            report::thousands(replayed),
            report::thousands(summary.handled),
            report::thousands(summary.deadletters_delivered)
        );
        Ok::<_, anyhow::Error>(())
    })
}

/// The live table: the lots as `parkcast query` shows them (now, and at 30 minutes and an hour),
/// under the stream's time and the replay's progress.
fn live_table(
    context: &parkcast_serving::grpc::ServiceContext,
    lots: &[u32],
    replayed: u64,
) -> String {
    let answers: Vec<_> = lots
        .iter()
        .map(|lot| context.lot_answer(*lot, &[30, 60]))
        .collect();
    let now = chrono::DateTime::from_timestamp_millis(context.scoring.now_ms())
        .map(|at| {
            at.with_timezone(&DEMO_TIMEZONE)
                .format("%a %d %b %H:%M")
                .to_string()
        })
        .unwrap_or_default();
    format!(
        "city time {now} · {} events replayed · {}",
        report::thousands(replayed),
        parkcast_client::text::availability_table(&answers)
    )
}

/// The simulated city's silence limit, minutes: live state uses the simulator's own.
const DEMO_SILENCE_MINUTES: u32 = 300;

/// First day of the simulated city.
fn demo_start() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2025, 11, 3).expect("the demo start date should be valid")
}

/// The demo city's time zone (the simulator's default, and its holiday region's).
const DEMO_TIMEZONE: chrono_tz::Tz = chrono_tz::Europe::London;

/// The start (UTC ms) of the simulated city's last local day.
fn local_day_start(args: &DemoArgs) -> Result<i64> {
    let last = demo_start() + chrono::Days::new(u64::from(args.days.saturating_sub(1)));
    parkcast_localtime::day_start(DEMO_TIMEZONE, last)
        .map(|start| start.timestamp_millis())
        .context("the demo's last day is outside chrono's range")
}

/// The demo's operator database on the `--postgres` server: `parkcast_demo`, dropped and created
/// afresh (a rerun starts clean), with a simulated backend writing to it.
fn demo_backend(dsn: &str) -> Result<(parkcast_opsim::SimulatedBackend, postgres::Config)> {
    const DATABASE: &str = "parkcast_demo";
    let server: postgres::Config = dsn
        .parse()
        .context("--postgres is not a valid connection string")?;
    let config = parkcast_opstore::create_database(&server, DATABASE, true).context(
        "could not create the demo's database parkcast_demo on the Postgres server (--postgres)",
    )?;
    let client = config
        .connect(postgres::NoTls)
        .context("could not connect to the demo's database")?;
    let backend = parkcast_opsim::SimulatedBackend::new(client, 42)
        .context("the demo's database refused the simulated backend")?;
    println!("     the operator's backend goes to Postgres database {DATABASE}");
    Ok((backend, config))
}

/// Prices changed kind by kind in different weeks, so the price response is identified: street
/// +30% a third of the way in, shopping centres -20% at half way, commuter garages +25% at two
/// thirds.
fn demo_price_changes(days: u32) -> Vec<parkcast_training::simulate::TariffChange> {
    use parkcast_training::simulate::demand::LotKind;
    let on = |day: u32| demo_start() + chrono::Days::new(u64::from(day));
    [
        (on(days / 3), 1.3, LotKind::StreetZone),
        (on(days / 2), 0.8, LotKind::ShoppingCentre),
        (on(days * 2 / 3), 1.25, LotKind::CommuterGarage),
    ]
    .into_iter()
    .map(
        |(from, factor, kind)| parkcast_training::simulate::TariffChange {
            from,
            factor,
            kind: Some(kind),
        },
    )
    .collect()
}

/// The operator's side: the ETL into the warehouse, then the reconciliation with the stays.
fn operator_side(
    config: &postgres::Config,
    warehouse: &parkcast_warehouse::Warehouse,
    global: &GlobalArgs,
) -> Result<()> {
    let mut client = config
        .connect(postgres::NoTls)
        .context("could not connect to the demo's database")?;
    println!("     loading the operator's data into the warehouse (parkcast etl)");
    // Another transaction open on the server would hold the window's end before the city's
    // last writes: wait for them to be inside it, as a scheduled ETL would on its next run.
    if !parkcast_opstore::wait_for_window(&mut client, std::time::Duration::from_secs(60))
        .context("could not read the server's transaction bound")?
    {
        println!(
            "     note: a long transaction on the server holds the ETL's window back; some rows wait for a later run"
        );
    }
    let options = parkcast_etl::EtlOptions {
        source: simulate::SOURCE.to_owned(),
    };
    let loaded = BarProgress::run(global.quiet, |progress| {
        parkcast_etl::run(&mut client, warehouse, &options, progress)
    })
    .context("the ETL failed")?;
    println!("{}", report::etl_table(&loaded));
    let reconciliation = parkcast_etl::reconcile::reconcile(warehouse, simulate::SOURCE, 2)
        .context("the reconciliation failed")?;
    super::reconcile::print_summary(&reconciliation);
    Ok(())
}
