//! `parkcast bench grpc`'s produce -> visible part against a real `parkcast serve` process and the
//! test broker, in the setting the benchmark scripts use: a server replaying the past on the
//! stream's clock (`--clock stream`).
//!
//! Such a server judges event times against the newest it has seen and refuses a reading far ahead
//! of it until several lots agree (`far_future`). The bench once stamped its readings with the
//! wall clock: the first lots' priming readings were refused, those lots stayed unknown, and the
//! priming never became visible (the harness timed out for weeks unnoticed, since no test ran it).
//! Here the server's clock is in September 2025 and the bench must prime, probe and see every probe
//! within its 5 s timeout, with its clock running 60 times faster than real time.

use std::net::SocketAddr;

use parkcast_kafka::testing::fresh_config;
use parkcast_proto::v1::GetAvailabilityRequest;
use parkcast_proto::v1::availability_client::AvailabilityClient;

use crate::common;

/// Where the simulated city's history ends and the server's clock starts.
const HISTORY_UNTIL: &str = "2025-09-03T00:00:00Z";
const HISTORY_UNTIL_MS: i64 = 1_756_857_600_000;
/// The bench's clock rate.
const CLOCK_RATE: i64 = 60;
/// Seconds of probing.
const PROBE_SECONDS: i64 = 2;

/// The server's clock, by its answer for a lot.
fn server_clock_ms(addr: SocketAddr) -> i64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut client = AvailabilityClient::connect(format!("http://{addr}"))
            .await
            .expect("the server accepts a connection");
        client
            .get_availability(GetAvailabilityRequest {
                lot_id: "sim:lot0000".to_owned(),
                horizon_minutes: Vec::new(),
                arrival_time_ms: 0,
                price_per_hour: None,
            })
            .await
            .expect("an answer")
            .into_inner()
            .as_of_ms
    })
}

#[test]
fn produce_to_visible_runs_against_a_server_on_the_streams_clock() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let warehouse = dir.path().join("city");
    // Four lots: more than the three that must agree before a stream clock jumps.
    common::succeeded(&common::parkcast(&[
        "simulate",
        "--lots",
        "4",
        "--days",
        "2",
        "--start",
        "2025-09-01",
        "--out",
        warehouse.to_str().expect("a UTF-8 path"),
    ]));
    let kafka = fresh_config("benchgrpc", 2);
    let server = common::serve(
        &warehouse,
        dir.path(),
        &kafka,
        &["--clock", "stream", "--history-until", HISTORY_UNTIL],
    );
    let addr = server.addr;
    let before = server_clock_ms(addr);
    assert_eq!(
        before, HISTORY_UNTIL_MS,
        "a stream clock starts where the history ends"
    );

    let (rate, seconds) = (CLOCK_RATE.to_string(), PROBE_SECONDS.to_string());
    let (url, prefix) = (format!("http://{addr}"), common::topic_prefix(&kafka));
    let bench = common::parkcast(&[
        "bench",
        "grpc",
        "--no-sweep",
        "--addr",
        &url,
        "-w",
        warehouse.to_str().expect("a UTF-8 path"),
        "--bootstrap",
        &kafka.bootstrap_servers,
        "--topic-prefix",
        &prefix,
        "--event-rate",
        "500",
        "--probes",
        "10",
        "--visibility-seconds",
        &seconds,
        "--clock-rate",
        &rate,
    ]);
    let text = common::succeeded(&bench);
    let cell = |name: &str| {
        text.lines()
            .find(|line| line.contains(name))
            .and_then(|line| line.split('┆').nth(1))
            .map(|cell| {
                cell.trim_matches(|c: char| c == '│' || c.is_whitespace())
                    .to_owned()
            })
            .unwrap_or_else(|| panic!("no {name:?} row in:\n{text}"))
    };
    let outcome = cell("visible / timed out");
    let (visible, timed_out) = outcome
        .split_once(" / ")
        .unwrap_or_else(|| panic!("unexpected cell {outcome:?}"));
    let visible: u64 = visible.replace(',', "").parse().expect("a count");
    assert!(visible > 0, "no probe became visible:\n{text}");
    assert_eq!(timed_out, "0", "probes timed out:\n{text}");
    assert_eq!(cell("event clock"), format!("{CLOCK_RATE} x real time"));
    // The readings moved the server's clock at the bench's rate: at least the probing time, sped
    // up (priming and waiting add more), and not to the bench machine's wall clock.
    let after = server_clock_ms(addr);
    assert!(
        after >= before + PROBE_SECONDS * CLOCK_RATE * 1_000,
        "the server's clock went from {before} to {after} only"
    );
    assert!(
        after < before + 86_400_000,
        "the server's clock jumped to {after}"
    );
    drop(server);
}
