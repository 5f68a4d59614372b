//! The whole live quality loop against a real gRPC server over TCP. A city in which one street
//! zone's demand doubles from Monday 6 October (`simulate --demand-shift`); a server serving a model
//! trained until 5 October, its history seeded, the stream fed as ingestion delivers it (session
//! events and grid values in time order, a scoring round per grid instant):
//! 1. day A (Monday 13 October): the drift alarm names the shifted lot, and only it;
//! 2. `parkcast retrain --addr` (the nightly job) trains a candidate on the archive until 13
//!    October, passes it offline, puts it in shadow; day B is streamed; the candidate beats the
//!    serving model live over the same period and the gate activates it;
//! 3. day C on the promoted model: the alarm names no lot at any hour, and the server's live figures
//!    equal a recomputation from the warehouse (`serving::recompute`) pair for pair.

use crate::common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use common::{LOOP_TRAIN, copy_until, parkcast, succeeded};
use parkcast_proto::v1::models_server::ModelsServer;
use parkcast_serving::grpc::ModelsService;
use parkcast_serving::live::{FeatureInput, GridRule, LotChange, LotSnapshot};
use parkcast_serving::models::ModelManager;
use parkcast_serving::quality::QualityConfig;
use parkcast_serving::scoring::{Clock, LiveSource, Scoring, ScoringConfig};
use parkcast_serving::topology::TopologyIndex;
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::lots::{LotInputs, load_lots};

const TOKEN: &str = "retrain-test-token";

/// Ingestion's side as the scorer reads it: changes the test queues, taken in order.
struct Feed {
    topology: TopologyIndex,
    pending: Mutex<Vec<LotChange>>,
    newest_ms: AtomicI64,
}

impl LiveSource for Feed {
    fn topology(&self) -> &TopologyIndex {
        &self.topology
    }

    fn set_grid(&self, _rule: Option<GridRule>) {}

    fn take_changes(
        &self,
        _now_ms: Option<i64>,
        _all: bool,
        out: &mut Vec<LotChange>,
    ) -> Option<i64> {
        out.append(&mut self.pending.lock().expect("the feed"));
        Some(self.newest_ms.load(Ordering::Relaxed))
    }

    fn stale_reason(&self) -> Option<String> {
        None
    }

    fn caught_up(&self) -> bool {
        true
    }
}

/// Every lot's grid values and session events in `[from_ms, until_ms)`, one change per lot and
/// grid instant, in time order (sessions first: ingestion delivers them before the grid value
/// they precede).
fn stream(lots: &[&LotInputs], from_ms: i64, until_ms: i64) -> Vec<(i64, LotChange)> {
    let mut changes = Vec::new();
    for (index, lot) in lots.iter().enumerate() {
        let mut previous = from_ms;
        for (instant, value) in lot.series.iter() {
            if !(from_ms..until_ms).contains(&instant) {
                continue;
            }
            let mut inputs: Vec<(i64, FeatureInput)> = lot
                .arrivals_ms
                .iter()
                .filter(|at| (previous..instant).contains(at) || **at == instant)
                .map(|at| (*at, FeatureInput::Arrival(*at)))
                .chain(
                    lot.departures_ms
                        .iter()
                        .filter(|at| (previous..instant).contains(at) || **at == instant)
                        .map(|at| (*at, FeatureInput::Departure(*at))),
                )
                .collect();
            inputs.sort_by_key(|(at, _)| *at);
            let mut inputs: Vec<FeatureInput> =
                inputs.into_iter().map(|(_, input)| input).collect();
            inputs.push(FeatureInput::Grid {
                instant_ms: instant,
                occupied: value.occupied.round() as u32,
                unknown: 0,
                capacity: value.capacity.round() as u32,
            });
            previous = instant + 1;
            changes.push((
                instant,
                LotChange {
                    lot: index as u32,
                    snapshot: LotSnapshot {
                        occupied: value.occupied.round() as u32,
                        free: (value.capacity - value.occupied).round() as u32,
                        unknown: 0,
                        newest_event_ms: Some(instant),
                        arrivals_last_hour: 0,
                        departures_last_hour: 0,
                        entries_last_hour: 0,
                        exits_last_hour: 0,
                        dwell_minutes: Vec::new(),
                    },
                    inputs,
                },
            ));
        }
    }
    changes.sort_by_key(|(instant, change)| (*instant, change.lot));
    changes
}

/// Local midnight of a date in the simulated city, ms.
fn midnight(date: &str) -> i64 {
    parkcast_localtime::day_start_ms(
        chrono_tz::Europe::London,
        date.parse::<NaiveDate>().expect("a date"),
    )
}

/// Streams `[from_ms, until_ms)` into the server: each grid instant's changes, then a scoring round.
/// Returns the lots the active model's drift alarm named at any whole hour of the stream.
fn feed(
    feed: &Feed,
    scoring: &Scoring,
    lots: &[&LotInputs],
    from_ms: i64,
    until_ms: i64,
) -> BTreeSet<String> {
    let changes = stream(lots, from_ms, until_ms);
    let mut named = BTreeSet::new();
    let mut at = 0;
    while at < changes.len() {
        let instant = changes[at].0;
        {
            let mut pending = feed.pending.lock().expect("the feed");
            while at < changes.len() && changes[at].0 == instant {
                pending.push(changes[at].1.clone());
                at += 1;
            }
        }
        feed.newest_ms.store(instant, Ordering::Relaxed);
        scoring.tick();
        if instant % 3_600_000 == 0 {
            let (_, drifting) = scoring.quality().expect("an active model");
            named.extend(
                drifting
                    .iter()
                    .filter_map(|drift| drift.lot.map(|lot| lots[lot].lot_id.clone())),
            );
        }
    }
    named
}

#[test]
fn retrain_promotes_a_candidate_better_live_in_shadow_and_the_alarm_clears() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let city = dir.path().join("city");
    let city_arg = city.display().to_string();
    // sim:lot0005, a street zone, doubles its demand from Monday 6 October.
    succeeded(&parkcast(&[
        "simulate",
        "-o",
        &city_arg,
        "--lots",
        "8",
        "--days",
        "46",
        "--start",
        "2025-09-01",
        "--interval",
        "5",
        "--demand-shift",
        "5:2025-10-06:2",
    ]));
    let registry = dir.path().join("models");
    let registry_arg = registry.display().to_string();
    // The serving model: data until 5 October.
    let before = dir.path().join("before");
    copy_until(&city, &before, "2025-10-05");
    let before_arg = before.display().to_string();
    let mut args = vec![
        "train",
        "-w",
        &before_arg,
        "--registry",
        &registry_arg,
        "--name",
        "simulated",
        "--force",
    ];
    args.extend_from_slice(&LOOP_TRAIN);
    succeeded(&parkcast(&args));
    // What the archive holds when retrain runs: data until 13 October, a week after the shift.
    let archive = dir.path().join("archive");
    copy_until(&city, &archive, "2025-10-13");

    // The server: every lot of the city, its 9 days before Monday 13 October seeded.
    let warehouse = Warehouse::open(&city).expect("the city");
    let all = load_lots(&warehouse, "simulated", 5).expect("the lots");
    let lots: Vec<&LotInputs> = all.values().collect();
    let topology = TopologyIndex::new(lots.iter().map(|lot| {
        let capacity = lot
            .series
            .iter()
            .map(|(_, value)| value.capacity)
            .fold(0.0, f64::max);
        (
            lot.lot_id.clone(),
            (0..capacity as u32)
                .map(|slot| format!("{}-{slot}", lot.lot_id))
                .collect(),
        )
    }))
    .expect("a topology");
    let source = Arc::new(Feed {
        topology,
        pending: Mutex::new(Vec::new()),
        newest_ms: AtomicI64::new(0),
    });
    let scoring = Arc::new(Scoring::new(
        Arc::clone(&source) as Arc<dyn LiveSource>,
        Clock::stream(),
        ScoringConfig::default(),
    ));
    let day_a = midnight("2025-10-13");
    let day_b = midnight("2025-10-14");
    let day_c = midnight("2025-10-15");
    let day_d = midnight("2025-10-16");
    for lot in &lots {
        let seeded_from = day_a - 9 * 86_400_000;
        let in_seed = |at: &&i64| (seeded_from..day_a).contains(*at);
        assert!(
            scoring.seed(
                &lot.lot_id,
                lot.series
                    .iter()
                    .filter(|(instant, _)| (seeded_from..day_a).contains(instant)),
                lot.arrivals_ms.iter().filter(in_seed).copied(),
                lot.departures_ms.iter().filter(in_seed).copied(),
            )
        );
    }
    source.newest_ms.store(day_a - 1, Ordering::Relaxed);
    let manager = Arc::new(ModelManager::new(&registry, Arc::clone(&scoring), None));
    manager
        .activate("simulated", 1)
        .expect("the serving model activates");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a loopback port");
    let address = format!("http://{}", listener.local_addr().expect("bound"));
    let models = ModelsService::new(Arc::clone(&manager), Some(TOKEN.to_owned()), None);
    runtime.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(ModelsServer::new(models))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .expect("the server runs");
    });

    // Day A, Monday 13 October, on the serving model: its alarm names the shifted lot, and only it.
    let named = feed(&source, &scoring, &lots, day_a, day_b);
    assert_eq!(named, BTreeSet::from(["sim:lot0005".to_owned()]));

    // retrain, as the nightly job runs it.
    let archive_arg = archive.display().to_string();
    let out = dir.path().join("retrain.log");
    let mut args = vec![
        "-q",
        "retrain",
        "-w",
        &archive_arg,
        "--registry",
        &registry_arg,
        "--model",
        "simulated",
        "--addr",
        &address,
        "--poll",
        "1s",
        "--min-pairs",
        "500",
        "--shadow-wait",
        "10m",
    ];
    args.extend_from_slice(&LOOP_TRAIN);
    let mut child = Command::new(env!("CARGO_BIN_EXE_parkcast"))
        .args(&args)
        .env("PARKCAST_ADMIN_TOKEN", TOKEN)
        .env("PARKCAST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("a log"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("retrain starts");
    let deadline = Instant::now() + Duration::from_secs(600);
    while scoring.shadow_quality().is_none() {
        if let Some(status) = child.try_wait().expect("a status") {
            panic!(
                "retrain ended ({status}) before the shadow: {}",
                std::fs::read_to_string(&out).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "no shadow within 10 minutes");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Day B, Tuesday, streamed while the candidate is in shadow: the gate judges it live.
    feed(&source, &scoring, &lots, day_b, day_c);
    let status = loop {
        if let Some(status) = child.try_wait().expect("a status") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "retrain did not decide within 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(status.success(), "{log}");
    eprintln!("{log}");
    let decision: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(registry.join("decisions.jsonl"))
            .expect("the decisions")
            .lines()
            .last()
            .expect("a decision"),
    )
    .expect("JSON");
    assert_eq!(decision["offline"]["passed"], true, "{log}");
    assert_eq!(decision["live"]["passed"], true, "{log}");
    assert_eq!(decision["promoted"], true, "{log}");
    // Promoted as the next version of the served line, a byte-identical copy of the candidate, so
    // the next nightly retrain finds the line it serves.
    assert_eq!(
        decision["promoted_as"],
        serde_json::json!(["simulated", 2]),
        "{log}"
    );
    assert_eq!(
        scoring.model().map(|model| model.label()),
        Some("simulated v2".to_owned())
    );
    let published = parkcast_inference::registry::Registry::open(&registry);
    assert_eq!(
        published.load("simulated", 2, None).expect("the copy").1,
        published
            .load("simulated-candidate", 1, None)
            .expect("the candidate")
            .1
    );
    assert!(scoring.shadow_quality().is_none());

    // Day C, Wednesday, on the promoted model: the alarm names no lot at any hour.
    let named = feed(&source, &scoring, &lots, day_c, day_d);
    assert!(named.is_empty(), "{named:?}");

    // The server's live figures of day C equal a recomputation from the warehouse: the promoted
    // model's forecasts from the last grid instant of day B on, scored on day C's actuals.
    let (live, _) = scoring.quality().expect("the promoted model's");
    let promoted = scoring.model().expect("a model");
    let recomputed = parkcast_serving::recompute::recompute(
        &promoted,
        &all,
        parkcast_serving::recompute::Period::new(day_c - 5 * 60_000, day_d),
        QualityConfig::default(),
        |_, _| {},
    );
    let offline = recomputed.summary(scoring.now_ms());
    assert_eq!(live.len(), offline.len());
    let mut scored = 0;
    for (live, offline) in live.iter().zip(&offline) {
        assert_eq!(
            (live.horizon_minutes, live.window, &live.city, &live.lots),
            (
                offline.horizon_minutes,
                offline.window,
                &offline.city,
                &offline.lots
            )
        );
        scored += live.city.pairs;
    }
    assert!(scored > 4_000, "{scored} pairs compared");
}
