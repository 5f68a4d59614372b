//! `parkcast bench`: the speed and memory figures the issues ask for, as a table.
//!
//! Benchmarks run the real code paths on real inputs (the simulator at a chosen scale, the whole
//! real data sets) into a temporary warehouse. Peak memory is the process's high-water mark
//! (`VmHWM`), so run one benchmark per process for a clean figure.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use comfy_table::{Cell, CellAlignment};
use parkcast_training::import;
use parkcast_training::progress::NoProgress;
use parkcast_training::simulate::{self, SimulationParams};

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
        warehouse: Option<std::path::PathBuf>,
        /// Cap on training rows per horizon.
        #[arg(long, default_value_t = 400_000)]
        max_training_rows: usize,
    },
    /// A running server's `GetAvailability` latency under an open-loop request sweep (issue targets:
    /// p99 under 2 ms at 5k requests/s on loopback, and the rate where p99 crosses 10 ms), and the
    /// produce -> visible delay of a sensor reading (p99 under 100 ms at 10k events/s; needs
    /// `--bootstrap` and `--warehouse`).
    Grpc(super::bench_grpc::GrpcBenchArgs),
    /// A running server's `GetAvailability` latency under h2load, which multiplexes like gateways
    /// and proxies (several requests per TCP segment; issue target: p99 under 2 ms at 5k
    /// requests/s), with `--with-grpc` next to `bench grpc`'s open-loop sweep in the same run.
    /// Needs h2load (`apt-get install nghttp2-client`).
    H2load(super::bench_h2load::H2loadBenchArgs),
    /// The cost of answering an arrival time: scoring the model directly (a feature vector and the
    /// trees per horizon) vs interpolating one target from the lot's ready forecast, which is what
    /// the server does per request. Uses a published model and its warehouse (`parkcast demo`
    /// leaves both in out/demo).
    Scoring {
        /// The warehouse the model learned from.
        #[arg(long, short = 'w', default_value = "out/demo/warehouse")]
        warehouse: std::path::PathBuf,
        /// The model registry.
        #[arg(long, default_value = "out/demo/models")]
        registry: std::path::PathBuf,
        /// The model line (its newest version is used).
        #[arg(long, default_value = "simulated")]
        model: String,
    },
}

pub fn run(args: BenchArgs) -> Result<()> {
    if let BenchTarget::Grpc(grpc) = &args.target {
        return super::bench_grpc::run(grpc);
    }
    if let BenchTarget::H2load(h2load) = &args.target {
        return super::bench_h2load::run(h2load);
    }
    if let BenchTarget::Scoring {
        warehouse,
        registry,
        model,
    } = &args.target
    {
        return bench_scoring(warehouse, registry, model);
    }
    let scratch = tempfile::tempdir().context("failed to create a scratch folder")?;
    if let BenchTarget::Train {
        lots,
        days,
        warehouse,
        max_training_rows,
    } = &args.target
    {
        return bench_train(
            scratch.path(),
            *lots,
            *days,
            warehouse.as_deref(),
            *max_training_rows,
        );
    }
    if let BenchTarget::Ingest {
        lots,
        slots,
        events,
    } = &args.target
    {
        return bench_ingest(*lots, *slots, *events);
    }
    if let BenchTarget::IngestKafka {
        bootstrap,
        lots,
        slots,
        rounds,
        partitions,
    } = &args.target
    {
        return super::bench_stream::bench_ingest_kafka(
            bootstrap,
            *lots,
            *slots,
            *rounds,
            *partitions,
        );
    }
    if let BenchTarget::Melbourne {
        bootstrap,
        partitions,
    } = &args.target
    {
        return super::bench_stream::bench_melbourne(bootstrap, *partitions);
    }
    let warehouse = super::create_warehouse(&scratch.path().join("warehouse"))?;
    let mut table = report::new_table(&[
        "benchmark",
        "wall time",
        "rows written",
        "rows/s",
        "peak RSS",
    ]);
    match args.target {
        BenchTarget::Simulate { lots, days } => {
            simulate_row(&warehouse, lots, days, &mut table)?;
        }
        BenchTarget::Train { .. }
        | BenchTarget::Ingest { .. }
        | BenchTarget::IngestKafka { .. }
        | BenchTarget::Melbourne { .. }
        | BenchTarget::Grpc(_)
        | BenchTarget::H2load(_)
        | BenchTarget::Scoring { .. } => {
            unreachable!("handled above")
        }
        BenchTarget::Import => {
            for source in parkcast_training::datasets::all() {
                let name = source.writer_name();
                let started = Instant::now();
                let outcome = import::import(&source, &warehouse, &NoProgress)
                    .with_context(|| format!("failed to import {name}"))?;
                let rows = outcome.written.iter().map(|(_, stats)| stats.rows).sum();
                add_row(
                    &mut table,
                    &format!(
                        "import {name} ({} rows read)",
                        report::thousands(outcome.rows_read)
                    ),
                    started,
                    rows,
                );
            }
        }
    }
    println!("{table}");
    println!(
        "peak RSS is the process high-water mark so far; machine: {} logical cores",
        num_cores()
    );
    Ok(())
}

/// Sensor messages through decode, validation and the live state on this thread.
/// Direct scoring vs interpolation from the ready forecast, per request, on every lot of the model.
fn bench_scoring(
    warehouse: &std::path::Path,
    registry: &std::path::Path,
    model: &str,
) -> Result<()> {
    use parkcast_serving::scoring::{ServedModel, forecast_at};

    let registry = parkcast_inference::registry::Registry::open(registry);
    let version = registry
        .latest(model)?
        .with_context(|| format!("model {model} has no published version"))?;
    let (manifest, bytes) = registry.load(model, version, None)?;
    let served = ServedModel::decode(manifest, &bytes)?;
    let warehouse =
        parkcast_warehouse::Warehouse::open(warehouse).context("failed to open the warehouse")?;
    let step = served.model.step_minutes();
    let lots = parkcast_warehouse::lots::load_lots(&warehouse, &served.manifest.card.source, step)?;
    let mut states = Vec::new();
    for (lot_id, lot) in &lots {
        let Some(mut state) = served.model.new_state(lot_id) else {
            continue;
        };
        let Some((last, _)) = lot.series.iter().last() else {
            continue;
        };
        for (instant, value) in lot.series.iter() {
            if instant > last - parkcast_serving::live::GRID_HISTORY_MS {
                state.push_value(instant, value);
            }
        }
        states.push(state);
    }
    anyhow::ensure!(
        !states.is_empty(),
        "no lot of the model has history in the warehouse"
    );
    let horizons = served.model.horizons_minutes().len();
    let rounds = 200usize;
    let started = Instant::now();
    let mut forecasts = Vec::new();
    for _ in 0..rounds {
        forecasts.clear();
        for state in &states {
            forecasts.extend(served.model.forecast(state));
        }
    }
    let direct_ns = started.elapsed().as_nanos() as f64 / (rounds * states.len()) as f64;
    let lookups = 200_000usize;
    let started = Instant::now();
    let mut checksum = 0.0;
    for index in 0..lookups {
        let forecast = &forecasts[index % forecasts.len()];
        // An arrival 37 minutes after the origin, the live rate known at the origin + 5 minutes.
        let now = forecast.origin_ms + 5 * 60_000;
        let point = forecast_at(
            |minutes| served.model.calibration(minutes),
            forecast,
            Some((now, 0.5)),
            forecast.origin_ms + 37 * 60_000,
        );
        checksum += point.map_or(0.0, |point| point.probability_any_free);
    }
    let interpolate_ns = started.elapsed().as_nanos() as f64 / lookups as f64;
    let mut table = report::new_table(&["per lot and request", "time", "what it does"]);
    table.add_row(vec![
        "score directly".to_owned(),
        format!("{:.1} us", direct_ns / 1_000.0),
        format!(
            "{horizons} feature vectors and model predictions ({} v{})",
            served.manifest.card.name, served.manifest.version
        ),
    ]);
    table.add_row(vec![
        "interpolate".to_owned(),
        format!("{interpolate_ns:.0} ns"),
        "one target from the ready forecast, with intervals and probabilities".to_owned(),
    ]);
    println!("{table}");
    println!(
        "{} lots; interpolation is {:.0}x cheaper per request (checksum {checksum:.1})",
        states.len(),
        direct_ns / interpolate_ns.max(1e-9)
    );
    interpolation_accuracy(&served, &lots)
}

/// How much accuracy interpolation gives up: over the last 7 days of every lot, each horizon the
/// model forecasts directly is also interpolated from its neighbours alone (the reading at the
/// origin, or the previous horizon, and the next horizon), as if the model lacked it; both are
/// scored against the actual rate at the target.
fn interpolation_accuracy(
    served: &parkcast_serving::scoring::ServedModel,
    lots: &std::collections::BTreeMap<String, parkcast_warehouse::lots::LotInputs>,
) -> Result<()> {
    use parkcast_serving::scoring::forecast_at;

    let horizons = served.model.horizons_minutes();
    // (direct error sum, interpolated error sum, persistence error sum, pairs) per inner horizon.
    let mut errors = vec![(0.0, 0.0, 0.0, 0u64); horizons.len()];
    for (lot_id, lot) in lots {
        let Some(mut state) = served.model.new_state(lot_id) else {
            continue;
        };
        let Some((last, _)) = lot.series.iter().last() else {
            continue;
        };
        let test_from = last - 7 * 86_400_000;
        for (instant, value) in lot.series.iter() {
            if instant <= test_from - parkcast_serving::live::GRID_HISTORY_MS {
                continue;
            }
            state.push_value(instant, value);
            if instant < test_from {
                continue;
            }
            let Some(forecast) = served.model.forecast(&state) else {
                continue;
            };
            for (index, horizon) in forecast.horizons.iter().enumerate() {
                if index + 1 == forecast.horizons.len() {
                    break;
                }
                let Some(actual) = lot.series.rate_at(horizon.target_ms) else {
                    continue;
                };
                if !horizon.rate.is_finite() {
                    continue;
                }
                let mut without = forecast.clone();
                without.horizons.remove(index);
                let Some(point) = forecast_at(
                    |minutes| served.model.calibration(minutes),
                    &without,
                    Some((instant, value.rate())),
                    horizon.target_ms,
                ) else {
                    continue;
                };
                let entry = &mut errors[index];
                entry.0 += (horizon.rate - actual).abs();
                entry.1 += (point.rate - actual).abs();
                entry.2 += (value.rate() - actual).abs();
                entry.3 += 1;
            }
        }
    }
    let mut table = report::new_table(&[
        "horizon",
        "MAE rate, model",
        "MAE rate, interpolated without it",
        "MAE rate, persistence",
        "pairs",
    ]);
    for (minutes, (direct, interpolated, persistence, pairs)) in horizons.iter().zip(&errors) {
        if *pairs == 0 {
            continue;
        }
        let mean = |sum: f64| format!("{:.4}", sum / *pairs as f64);
        table.add_row(vec![
            format!("{minutes} min"),
            mean(*direct),
            mean(*interpolated),
            mean(*persistence),
            report::thousands(*pairs),
        ]);
    }
    println!(
        "accuracy over each lot's last 7 days (the model saw them in training: compare the columns, not with the backtest)"
    );
    println!("{table}");
    Ok(())
}

fn bench_ingest(lots: u32, slots: u32, events: u32) -> Result<()> {
    use parkcast_serving::decode::{TimeRules, decode_sensor};
    use parkcast_serving::live::{LiveRules, LiveState};
    use prost::Message;

    let started = Instant::now();
    let topology = synthetic_topology(lots, slots)?;
    let mut state = LiveState::new(&topology, LiveRules::default());
    let build_seconds = started.elapsed().as_secs_f64();
    // Messages as a sensor gateway sends them: each slot's readings in sequence, a quarter heartbeats,
    // slots visited in a scrambled order, one second apart on the lot's clock.
    let now_ms = 1_764_000_000_000;
    let total_slots = u64::from(lots) * u64::from(slots);
    let messages: Vec<(String, Vec<u8>)> = (0..u64::from(events))
        .map(|index| {
            let slot_number = index.wrapping_mul(2_654_435_761) % total_slots.max(1);
            let round = index / total_slots.max(1);
            let (lot, slot) = (
                slot_number / u64::from(slots),
                slot_number % u64::from(slots),
            );
            let (lot_id, reading) =
                synthetic_reading(lot, slot, round, index % 4 == 0, now_ms - 3_600_000);
            (lot_id, reading.encode_to_vec())
        })
        .collect();
    let bytes: usize = messages
        .iter()
        .map(|(key, value)| key.len() + value.len())
        .sum();
    let rules = TimeRules::default();
    let started = Instant::now();
    let (mut applied, mut rejected) = (0u64, 0u64);
    for (key, value) in &messages {
        match decode_sensor(&topology, &rules, Some(key.as_bytes()), value, Some(now_ms))
            .and_then(|event| state.apply_sensor(&event))
        {
            Ok(_) => applied += 1,
            Err(_) => rejected += 1,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut table = report::new_table(&["measure", "value"]);
    let rows = [
        ("slots (lots x slots)", report::thousands(total_slots)),
        ("messages", report::thousands(u64::from(events))),
        ("message bytes", report::bytes(bytes as u64)),
        (
            "applied / rejected",
            format!(
                "{} / {}",
                report::thousands(applied),
                report::thousands(rejected)
            ),
        ),
        ("decode + validate + apply", format!("{seconds:.2} s")),
        (
            "events/s on one core",
            report::thousands((f64::from(events) / seconds.max(1e-9)) as u64),
        ),
        ("live state heap", report::bytes(state.heap_bytes() as u64)),
        ("topology + state build", format!("{build_seconds:.2} s")),
        (
            "peak RSS (incl. the messages)",
            peak_rss_kib().map_or_else(|| "n/a".to_owned(), |kib| report::bytes(kib * 1024)),
        ),
    ];
    for (name, value) in rows {
        table.add_row(vec![
            Cell::new(name),
            Cell::new(value).set_alignment(CellAlignment::Right),
        ]);
    }
    println!("{table}");
    let snapshot = state.lot(0, now_ms).context("lot 0 exists")?;
    println!(
        "lot00000 now: {} occupied, {} free, {} unknown",
        snapshot.occupied, snapshot.free, snapshot.unknown
    );
    Ok(())
}

/// `lots` lots of `slots` slots each: `lot00042`, `lot00042:s00007`.
pub(super) fn synthetic_topology(
    lots: u32,
    slots: u32,
) -> Result<parkcast_serving::topology::TopologyIndex> {
    parkcast_serving::topology::TopologyIndex::new((0..lots).map(|lot| {
        (
            format!("lot{lot:05}"),
            (0..slots)
                .map(|slot| format!("lot{lot:05}:s{slot:05}"))
                .collect(),
        )
    }))
    .context("invalid topology")
}

/// Reading `round` of a slot of [`synthetic_topology`] (a third free, one second apart from
/// `start_ms`), keyed by its lot.
pub(super) fn synthetic_reading(
    lot: u64,
    slot: u64,
    round: u64,
    heartbeat: bool,
    start_ms: i64,
) -> (String, parkcast_proto::v1::SensorReading) {
    use parkcast_proto::v1::{ReadingKind, SensorReading, SlotReport};
    let lot_id = format!("lot{lot:05}");
    let reading = SensorReading {
        schema_version: parkcast_proto::SCHEMA_VERSION,
        lot_id: lot_id.clone(),
        slot_id: format!("{lot_id}:s{slot:05}"),
        report: if (round + slot).is_multiple_of(3) {
            SlotReport::Free as i32
        } else {
            SlotReport::Occupied as i32
        },
        kind: if heartbeat {
            ReadingKind::Heartbeat as i32
        } else {
            ReadingKind::Change as i32
        },
        sensor_seq: round + 1,
        event_time_ms: start_ms + i64::try_from(round).unwrap_or(i64::MAX / 2_000) * 1_000,
    };
    (lot_id, reading)
}

/// Backtest + train on a simulated city; one row per stage.
fn bench_train(
    scratch: &std::path::Path,
    lots: u32,
    days: u32,
    existing: Option<&std::path::Path>,
    max_training_rows: usize,
) -> Result<()> {
    use parkcast_training::backtest::BacktestConfig;
    use parkcast_training::registry::Registry;
    use parkcast_training::train::{TrainConfig, train};

    let mut table = report::new_table(&["stage", "wall time", "rows", "rows/s", "peak RSS"]);
    let warehouse = match existing {
        Some(path) => super::WarehouseLocation {
            warehouse: path.to_owned(),
        }
        .open()?,
        None => {
            let warehouse = super::create_warehouse(&scratch.join("warehouse"))?;
            simulate_row(&warehouse, lots, days, &mut table)?;
            warehouse
        }
    };
    let last_day = warehouse
        .summary()
        .context("failed to summarise the warehouse")?
        .into_iter()
        .find(|summary| summary.table == parkcast_warehouse::schema::Table::FactLotOccupancy)
        .and_then(|summary| summary.date_range)
        .map(|(_, last)| last)
        .context("the warehouse has no lot occupancy")?;
    let step = 5;
    let horizons_minutes = [15, 30, 60, 120, 180, 360, 1_440, 10_080];
    let config = BacktestConfig {
        source: simulate::SOURCE.to_owned(),
        step_minutes: step,
        horizons: horizons_minutes
            .iter()
            .map(|minutes| minutes / step)
            .collect(),
        test_start: last_day - chrono::Days::new(6),
        test_end: last_day,
        same_day: false,
        calibration_days: 14,
        max_training_rows,
        ..BacktestConfig::birmingham()
    };
    let frozen = parkcast_training::frozen::LoadedConfig::embedded();
    let train_config = TrainConfig {
        backtest: BacktestConfig {
            calibration: frozen.config.calibration(),
            ..config
        },
        models: frozen.config.models(),
        name: "bench".to_owned(),
        publish_losing: true,
        frozen: Some(frozen.record(Vec::new())),
    };
    let registry = Registry::open(scratch.join("models"));
    let started = Instant::now();
    let outcome =
        train(&warehouse, &registry, &train_config, &NoProgress).context("training failed")?;
    let rows: usize = outcome.backtest.training_rows.values().sum();
    add_row(
        &mut table,
        &format!(
            "backtest (2 fits x 2 models x 8 horizons) + refit + publish, {} lots",
            outcome.backtest.lots.len()
        ),
        started,
        rows as u64,
    );
    println!("{table}");
    println!(
        "rows = training rows per fit over all horizons; model file {} bytes; machine: {} logical cores",
        outcome.published.manifest.model_bytes,
        num_cores()
    );
    for metrics in outcome
        .backtest
        .metrics
        .iter()
        .filter(|m| m.model == "persistence + profile change" || m.model == outcome.promoted)
    {
        println!(
            "  {:<30} {:>6} min  MAE rate {:.4}  80% covers {}",
            metrics.model,
            metrics.horizon_minutes,
            metrics.mae_rate,
            metrics.coverage_80.map_or_else(
                || "n/a".to_owned(),
                |share| format!("{:.1}%", share * 100.0)
            )
        );
    }
    Ok(())
}

/// Simulates a city into the warehouse and adds its row.
fn simulate_row(
    warehouse: &parkcast_warehouse::Warehouse,
    lots: u32,
    days: u32,
    table: &mut comfy_table::Table,
) -> Result<()> {
    let params = SimulationParams::default()
        .lots(lots)
        .days(days)
        .check()
        .context("invalid parameters")?;
    let started = Instant::now();
    let outcome =
        simulate::simulate(&params, warehouse, &NoProgress).context("simulation failed")?;
    let rows = outcome.written.iter().map(|(_, stats)| stats.rows).sum();
    add_row(
        table,
        &format!("simulate {lots} lots x {days} days"),
        started,
        rows,
    );
    Ok(())
}

fn add_row(table: &mut comfy_table::Table, name: &str, started: Instant, rows: u64) {
    let seconds = started.elapsed().as_secs_f64();
    let right = |text: String| Cell::new(text).set_alignment(CellAlignment::Right);
    table.add_row(vec![
        Cell::new(name),
        right(format!("{seconds:.2} s")),
        right(report::thousands(rows)),
        right(report::thousands((rows as f64 / seconds.max(1e-9)) as u64)),
        right(peak_rss_kib().map_or_else(|| "n/a".to_owned(), |kib| report::bytes(kib * 1024))),
    ]);
}

/// The process's peak resident set size in KiB, from `/proc/self/status` (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
