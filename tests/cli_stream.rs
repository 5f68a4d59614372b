//! The streaming commands as an operator runs them, against the broker `scripts/test.sh` starts: a
//! simulated city replayed in accelerated real time while `parkcast ingest` consumes it, the consumer
//! killed with SIGKILL mid-stream, restarted, and its final state compared with an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use parkcast_kafka::testing::{fresh_config, unique_name, wait_until};

fn parkcast() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_parkcast"));
    command
        .arg("--quiet")
        .env("PARKCAST_LOG", "warn")
        .stdin(Stdio::null());
    command
}

fn succeed(command: &mut Command) -> Output {
    let output = command.output().expect("parkcast should run");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

struct Setup {
    warehouse: PathBuf,
    config: PathBuf,
    bootstrap: String,
    prefix: String,
}

impl Setup {
    fn ingest(&self, group: &str, state_dir: &Path) -> Command {
        let mut command = parkcast();
        command
            .args(["ingest", "-w"])
            .arg(&self.warehouse)
            .arg("--config")
            .arg(&self.config)
            .args([
                "--bootstrap",
                &self.bootstrap,
                "--topic-prefix",
                &self.prefix,
            ])
            .args(["--group", group, "--metrics-addr", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(state_dir);
        command
    }

    fn run_to_the_end(&self, group: &str, state_dir: &Path, dump: &Path) -> serde_json::Value {
        self.run_to_the_end_as(group, None, state_dir, dump)
    }

    fn run_to_the_end_as(
        &self,
        group: &str,
        instance_id: Option<&str>,
        state_dir: &Path,
        dump: &Path,
    ) -> serde_json::Value {
        let mut command = self.ingest(group, state_dir);
        if let Some(instance_id) = instance_id {
            command.args(["--instance-id", instance_id]);
        }
        succeed(
            command
                .arg("--until-caught-up")
                .arg("--dump-state")
                .arg(dump),
        );
        let text = std::fs::read_to_string(dump).expect("the state dump should be written");
        serde_json::from_str(&text).expect("the state dump is JSON")
    }
}

fn has_checkpoint(state_dir: &Path) -> bool {
    // Written atomically (temporary name, then rename): a `.ckpt` file is complete.
    std::fs::read_dir(state_dir).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|entry| entry.file_name().to_string_lossy().ends_with(".ckpt"))
    })
}

#[test]
fn a_consumer_killed_mid_stream_resumes_to_the_state_of_an_uninterrupted_run() {
    parkcast_kafka::require_broker!();
    let dir = tempfile::tempdir().expect("temporary folder");
    let warehouse = dir.path().join("city");
    succeed(
        parkcast()
            .args([
                "simulate",
                "--lots",
                "3",
                "--days",
                "2",
                "--interval",
                "15",
                "--out",
            ])
            .arg(&warehouse),
    );
    let kafka = fresh_config("cli", 2);
    let prefix = kafka
        .topics
        .sensor
        .strip_suffix(".parkcast.sensor.v1")
        .expect("prefixed topic names")
        .to_owned();
    let config = dir.path().join("serving.toml");
    std::fs::write(
        &config,
        r#"# Checkpoint often, and let a killed member's session expire quickly.
[ingest]
checkpoint_interval_ms = 300
probe_interval_ms = 200

[ingest.kafka.librdkafka_options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"#,
    )
    .expect("config written");
    let setup = Setup {
        warehouse: warehouse.clone(),
        config,
        bootstrap: kafka.bootstrap_servers.clone(),
        prefix: prefix.clone(),
    };

    // Two simulated days at 30,000x: about 6 s of producing, consumed as it arrives.
    let mut replay: Child = parkcast()
        .args(["replay", "--from"])
        .arg(&warehouse)
        .args(["--bootstrap", &setup.bootstrap, "--topic-prefix", &prefix])
        .args(["--speed", "30000"])
        .stdout(Stdio::null())
        .spawn()
        .expect("replay should start");
    let group = unique_name("cli-group");
    let state = dir.path().join("state");
    let mut victim = setup
        .ingest(&group, &state)
        .args(["--instance-id", "replica-0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ingest should start");
    assert!(
        wait_until(Duration::from_secs(60), || has_checkpoint(&state)),
        "the consumer should checkpoint"
    );
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        replay.try_wait().expect("replay status").is_none(),
        "the kill should land while the stream is still arriving"
    );
    victim.kill().expect("SIGKILL");
    victim.wait().expect("the killed consumer is reaped");
    let replayed = replay.wait().expect("replay ends");
    assert!(replayed.success(), "replay failed");

    // The restart resumes from the checkpoint files, which carry their offsets; the group's
    // committed offsets are not used for positioning. It rejoins the same group under the same
    // static membership name: the broker hands the dead member's partitions to it at once (the
    // test broker, noida-db 0.2.3, never expires a dynamic member that died without leaving; a
    // Kafka broker waits `session.timeout.ms`).
    let resumed_at = std::time::Instant::now();
    let resumed = setup.run_to_the_end_as(
        &group,
        Some("replica-0"),
        &state,
        &dir.path().join("resumed.json"),
    );
    assert!(
        resumed_at.elapsed() < Duration::from_secs(60),
        "the restarted replica got its partitions back without waiting for the dead one to expire"
    );
    let reference = setup.run_to_the_end(
        &unique_name("cli-reference"),
        &dir.path().join("reference-state"),
        &dir.path().join("reference.json"),
    );
    assert_eq!(
        reference.as_object().map(serde_json::Map::len),
        Some(3),
        "every lot has live state"
    );
    assert_eq!(resumed, reference);
}

#[test]
fn a_replayed_city_archived_from_kafka_trains_like_any_warehouse() {
    parkcast_kafka::require_broker!();
    let dir = tempfile::tempdir().expect("temporary folder");
    let city = dir.path().join("city");
    succeed(
        parkcast()
            .args([
                "simulate",
                "--lots",
                "3",
                "--days",
                "21",
                "--interval",
                "15",
            ])
            .args(["--start", "2025-09-01", "--out"])
            .arg(&city),
    );
    let kafka = fresh_config("train", 2);
    let prefix = kafka
        .topics
        .sensor
        .strip_suffix(".parkcast.sensor.v1")
        .expect("prefixed topic names")
        .to_owned();
    let broker = [
        "--bootstrap",
        &kafka.bootstrap_servers,
        "--topic-prefix",
        &prefix,
    ];
    succeed(
        parkcast()
            .args(["replay", "--from"])
            .arg(&city)
            .args(broker),
    );
    let archive = dir.path().join("archive");
    let archived = succeed(
        parkcast()
            .args(["archive", "-w"])
            .arg(&archive)
            .arg("--dimensions-from")
            .arg(&city)
            .args(["--until-idle", "2", "--silence-minutes", "300"])
            .args(broker),
    );
    let summary = String::from_utf8_lossy(&archived.stdout);
    assert!(summary.contains("fact_lot_occupancy rows"), "{summary}");
    // The trainer reads the archive like any warehouse: source `kafka`, the last week as the test.
    let backtest = succeed(
        parkcast()
            .args(["backtest", "-w"])
            .arg(&archive)
            .args(["--source", "kafka", "--step", "15", "--horizons", "15m,1h"])
            .args(["--test-start", "2025-09-15", "--test-end", "2025-09-20"])
            .args(["--calibration-days", "5", "--models", "linear"]),
    );
    let table = String::from_utf8_lossy(&backtest.stdout);
    assert!(
        table.contains("elastic net") && table.contains("persistence + profile change"),
        "{table}"
    );
}
