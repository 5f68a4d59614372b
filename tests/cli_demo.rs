//! `parkcast demo` as the README runs it, smaller: a simulated city, its model trained, the server
//! started on an in-process broker, the last day replayed, the live table printed, a clean stop.
//! While it runs, `parkcast query` asks the demo's server over real gRPC.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;

#[test]
fn the_demo_serves_a_live_table_and_answers_queries_over_grpc() {
    let dir = tempfile::tempdir().expect("temporary folder");
    // With the test command's Postgres, the operator's side too (backend, ETL, reconciliation,
    // the price response and a what-if).
    let postgres = parkcast_opstore::testing::server_dsn();
    assert!(
        postgres.is_some() || std::env::var_os("PARKCAST_REQUIRE_POSTGRES").is_none(),
        "PARKCAST_REQUIRE_POSTGRES is set but PARKCAST_POSTGRES_DSN is not"
    );
    let postgres_flags: Vec<&str> = postgres
        .iter()
        .flat_map(|dsn| ["--postgres", dsn.as_str()])
        .collect();
    // 30 s live: the server turns SERVING once ingestion has read the replay's backlog (seconds),
    // which leaves the health watch below well over its 20 checks.
    let mut demo = common::Demo::start(
        dir.path(),
        &[&["--lots", "4", "--for", "30"], postgres_flags.as_slice()].concat(),
    );
    // The banner names the gRPC and HTTP addresses; ask the server while the demo runs.
    let banner = demo.line_after("gRPC on ");
    let address = banner
        .split_whitespace()
        .next()
        .expect("the banner names the gRPC address")
        .to_owned();
    let http_address = banner
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("the banner names the HTTP address (metrics and REST)")
        .to_owned();
    // Health turns SERVING once the model is active and ingestion has caught up.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let serving = runtime.block_on(async {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_check_response::ServingStatus;
        let mut health = health_client(&address).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: "parkcast.v1.Availability".to_owned(),
                })
                .await
                .expect("a health status")
                .into_inner()
                .status;
            if status == ServingStatus::Serving as i32 || Instant::now() > deadline {
                break status == ServingStatus::Serving as i32;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    assert!(serving, "health never turned SERVING");
    // The live-accuracy alarm has a health status of its own (SERVING unless something drifts).
    let quality_status = runtime.block_on(async {
        use tonic_health::pb::HealthCheckRequest;
        health_client(&address)
            .await
            .check(HealthCheckRequest {
                service: "parkcast.v1.LiveQuality".to_owned(),
            })
            .await
            .map(|response| response.into_inner().status)
    });
    assert!(quality_status.is_ok(), "{quality_status:?}");
    // From then on it stays SERVING while the demo runs: a replay under way is no reason to say
    // otherwise (the liveness probe once sat behind a long-poll fetch and reported a dead broker).
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let watching = std::sync::Arc::clone(&watching);
        let address = address.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                use tonic_health::pb::HealthCheckRequest;
                use tonic_health::pb::health_check_response::ServingStatus;
                let mut health = health_client(&address).await;
                let mut not_serving = Vec::new();
                let mut checks = 0;
                while watching.load(std::sync::atomic::Ordering::Relaxed) {
                    // The server stopping (at the end of --for) ends the watch.
                    let Ok(response) = health
                        .check(HealthCheckRequest {
                            service: "parkcast.v1.Availability".to_owned(),
                        })
                        .await
                    else {
                        break;
                    };
                    checks += 1;
                    let status = response.into_inner().status;
                    if status != ServingStatus::Serving as i32 {
                        not_serving.push(status);
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                (checks, not_serving)
            })
        })
    };
    let query = Command::new(env!("CARGO_BIN_EXE_parkcast"))
        .args(["--quiet", "query", "--addr"])
        .arg(format!("http://{address}"))
        .args(["--lot", "sim:lot0001", "--horizons", "30,60", "--json"])
        .env("PARKCAST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("the query runs");
    assert!(
        query.status.success(),
        "{}",
        String::from_utf8_lossy(&query.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&query.stdout).expect("a JSON answer");
    assert_eq!(answer["lot_id"], "sim:lot0001");
    assert_eq!(answer["model_name"], "simulated");
    assert_eq!(answer["forecasts"].as_array().map(Vec::len), Some(2));
    // The same question as JSON over HTTP, on the metrics port (the REST face).
    let (status, body) = common::http(
        &http_address,
        "GET",
        "/v1/lots/sim:lot0001/availability?horizon_minutes=30,60",
        None,
    )
    .expect("the REST face answers");
    assert_eq!(status, 200, "{body}");
    let rest: serde_json::Value = serde_json::from_str(&body).expect("a JSON answer");
    assert_eq!(rest["lotId"], "sim:lot0001");
    assert_eq!(rest["modelName"], "simulated");
    assert_eq!(rest["forecasts"].as_array().map(Vec::len), Some(2));
    if postgres.is_some() {
        // The served model learned the city's price response: a what-if answers.
        let what_if = Command::new(env!("CARGO_BIN_EXE_parkcast"))
            .args(["--quiet", "query", "--addr"])
            .arg(format!("http://{address}"))
            .args(["--lot", "sim:lot0001", "--horizons", "60", "--price", "10"])
            .env("PARKCAST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("the what-if query runs");
        let text = String::from_utf8_lossy(&what_if.stdout);
        assert!(
            what_if.status.success() && text.contains("what-if: sim:lot0001 at 10.00/h"),
            "{text}{}",
            String::from_utf8_lossy(&what_if.stderr)
        );
    }
    // The server scores its own forecasts as the replay brings their targets' actuals.
    let deadline = Instant::now() + Duration::from_secs(25);
    let scored = loop {
        let scored = live_scored_pairs(&http_address);
        if scored > 0 || Instant::now() > deadline {
            break scored;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(scored > 0, "no forecast scored on live actuals");
    // The same figures over gRPC (GetLiveQuality), city-wide and for one lot.
    let quality = Command::new(env!("CARGO_BIN_EXE_parkcast"))
        .args(["--quiet", "query", "--addr"])
        .arg(format!("http://{address}"))
        .args(["--json", "quality", "--lot", "sim:lot0001"])
        .env("PARKCAST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("the quality query runs");
    assert!(
        quality.status.success(),
        "{}",
        String::from_utf8_lossy(&quality.stderr)
    );
    let quality: serde_json::Value =
        serde_json::from_slice(&quality.stdout).expect("a JSON answer");
    assert_eq!(quality["model_name"], "simulated");
    assert_eq!(quality["lots"][0]["lot_id"], "sim:lot0001");
    let city_scored: u64 = quality["city"]
        .as_array()
        .expect("the city's windows")
        .iter()
        .filter(|window| window["window"] == "day")
        .filter_map(|window| window["pairs"].as_u64())
        .sum();
    assert!(city_scored > 0, "{quality}");
    let status = demo.read_to_end(|line| {
        // The summary after the live part: the server is stopping.
        if line.starts_with("stopped:") {
            watching.store(false, std::sync::atomic::Ordering::Relaxed);
        }
    });
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let (checks, not_serving) = watcher.join().expect("the health watch ends");
    assert!(
        checks >= 20 && not_serving.is_empty(),
        "health stayed SERVING while the demo ran: {} of {checks} checks were not ({not_serving:?})",
        not_serving.len()
    );
    let output = demo.printed.join("\n");
    assert!(status.success(), "{output}");
    for expected in [
        "4/5  training the simulated city's model",
        "5/5  live",
        "model simulated v1",
        // The lots as `parkcast query` shows them, under the replay's progress.
        "events replayed",
        "+30 min",
        "+60 min",
        "expected free slots [80% interval]",
        "parkcast query --addr http://",
        "operations page: http://",
        "stopped:",
    ] {
        assert!(output.contains(expected), "{expected:?} missing:\n{output}");
    }
    assert!(
        output.contains("sim:lot0003"),
        "every lot in the table:\n{output}"
    );
    if postgres.is_some() {
        for expected in [
            "injected: stays without payment",
            "fact_payment",
            "stays without payment (est. at the lot's mean)",
            "price response: arrivals scale with price to the power",
        ] {
            assert!(output.contains(expected), "{expected:?} missing:\n{output}");
        }
    }
}

/// The forecasts scored on live actuals over the last day at any horizon, from `/metrics`
/// (0 while the server has not published any).
fn live_scored_pairs(address: &str) -> u64 {
    let Ok((_, body)) = common::http(address, "GET", "/metrics", None) else {
        return 0;
    };
    body.lines()
        .filter(|line| {
            line.starts_with("parkcast_live_scored_pairs{") && line.contains("window=\"day\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A health client of the server at `address` (`host:port`).
async fn health_client(
    address: &str,
) -> tonic_health::pb::health_client::HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
        .expect("a valid address")
        .connect()
        .await
        .expect("the server accepts connections");
    tonic_health::pb::health_client::HealthClient::new(channel)
}
