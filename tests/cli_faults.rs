//! A broker that dies under a running server, seen from outside as an operator's health checker and
//! the driver's app see it: `parkcast demo` serving a city through a broker of the test's own, the
//! broker killed with SIGKILL mid-replay, and restarted.
//!
//! Within seconds health turns NOT_SERVING and answers say they are stale and why; once the broker is
//! back, health turns SERVING again and the answers are fresh; the demo ends cleanly.

use std::time::{Duration, Instant};

use parkcast_kafka::testing::OwnBroker;
use parkcast_proto::v1::GetAvailabilityRequest;
use parkcast_proto::v1::availability_client::AvailabilityClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::common;

/// Polls `check` every 250 ms until it returns true or `timeout` passes; the time it took.
async fn within(timeout: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

#[test]
fn a_broker_killed_under_a_running_server_turns_it_not_serving_and_stale_until_it_is_back() {
    parkcast_kafka::require_broker!();
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut broker = OwnBroker::start();
    let bootstrap = broker.bootstrap_servers();
    let mut demo = common::Demo::start(
        dir.path(),
        &[
            "--lots",
            "3",
            // Long enough for a slow machine's recovery; the test stops it once it has seen it.
            "--for",
            "900",
            "--speed",
            "60",
            "--bootstrap",
            &bootstrap,
        ],
    );
    let address = demo.word_after("gRPC on ");
    let drained = demo.drain();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
            .expect("a valid address")
            .connect()
            .await
            .expect("the server accepts connections");
        let mut health = HealthClient::new(channel.clone());
        let mut availability = AvailabilityClient::new(channel);
        let mut status = async || {
            health
                .check(HealthCheckRequest {
                    service: "parkcast.v1.Availability".to_owned(),
                })
                .await
                .map(|response| response.into_inner().status)
                .unwrap_or(-1)
        };
        let serving = ServingStatus::Serving as i32;
        let not_serving = ServingStatus::NotServing as i32;
        assert!(
            within(Duration::from_secs(120), async || status().await == serving)
                .await
                .is_some(),
            "health turns SERVING"
        );
        let mut answer = async || {
            availability
                .get_availability(GetAvailabilityRequest {
                    lot_id: "sim:lot0001".to_owned(),
                    horizon_minutes: vec![30],
                    ..GetAvailabilityRequest::default()
                })
                .await
                .expect("an answer")
                .into_inner()
        };
        // SERVING means ingestion caught up; the lot's first forecast follows within a scoring round.
        let fresh = within(Duration::from_secs(60), async || !answer().await.stale).await;
        assert!(
            fresh.is_some(),
            "a fresh answer while the broker is up: {:?}",
            answer().await
        );

        // The broker dies without a goodbye.
        broker.kill();
        let noticed = within(Duration::from_secs(30), async || {
            status().await == not_serving
        })
        .await
        .expect("health turns NOT_SERVING within seconds of losing the broker");
        eprintln!("NOT_SERVING {noticed:?} after the kill");
        let stale = answer().await;
        assert!(
            stale.stale && stale.stale_reason.contains("broker has not answered"),
            "answers say they are stale and why: {stale:?}"
        );
        assert!(
            !stale.forecasts.is_empty(),
            "the last forecast is still given, flagged"
        );

        // It comes back with its log: the server catches up and serves again.
        broker.restart();
        let back = within(Duration::from_secs(120), async || status().await == serving)
            .await
            .expect("health turns SERVING again once the broker is back");
        eprintln!("SERVING {back:?} after the restart");
        // A broker killed with SIGKILL may come back without its last writes (noida-db loses what it
        // had not persisted; the log is then rebuilt from what it holds), so the lot may have no
        // event left: the answer must stop blaming the broker, and be fresh wherever events remain.
        let mut last = answer().await;
        let recovered = within(Duration::from_secs(60), async || {
            last = answer().await;
            !last.stale_reason.contains("broker")
        })
        .await;
        assert!(
            recovered.is_some(),
            "answers stop saying the broker is gone: {last:?}"
        );
    });
    let exit = demo
        .terminate(Duration::from_secs(60))
        .expect("the demo stops within a minute of SIGTERM");
    let mut printed = std::mem::take(&mut demo.printed);
    printed.extend(drained.join().expect("output drained"));
    assert!(exit.success(), "{}", printed.join("\n"));
}
