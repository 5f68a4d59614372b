//! Helpers for tests against the real broker that the test command starts.
//!
//! `scripts/test.sh` starts a Kafka-protocol broker on loopback and exports its address as
//! `PARKCAST_KAFKA_BOOTSTRAP`. Tests that need a broker start with [`require_broker!`]: under a plain
//! `cargo test` they are skipped with a line saying so; under the test command, which sets
//! `PARKCAST_REQUIRE_BROKER`, a missing broker fails them, since a broker test that passes without a
//! broker proves nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{KafkaConfig, TopicNames, create_topics};

/// The environment variable with the test broker's address.
pub const BOOTSTRAP_ENV: &str = "PARKCAST_KAFKA_BOOTSTRAP";

/// Set by the test command: there a test that needs a broker fails without one instead of skipping.
pub const REQUIRE_BROKER_ENV: &str = "PARKCAST_REQUIRE_BROKER";

/// Whether the brokers a broker-backed test needs are configured: the shared test broker
/// (`PARKCAST_KAFKA_BOOTSTRAP`) and the broker binary for tests that run their own
/// (`PARKCAST_NOIDA_BIN`). Under a plain `cargo test` they are not: the test is skipped with a line
/// on the terminal saying why and how to run it. Under the test command (`PARKCAST_REQUIRE_BROKER=1`)
/// a missing broker panics, so the suite can never pass by skipping. Use [`require_broker!`].
///
/// # Panics
/// When a broker is missing and `PARKCAST_REQUIRE_BROKER` is set.
pub fn brokers_configured(test: &str) -> bool {
    let missing: Vec<&str> = [BOOTSTRAP_ENV, BROKER_BIN_ENV]
        .into_iter()
        .filter(|name| std::env::var_os(name).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let reason = format!(
        "{} not set: this test needs the Kafka broker that `bash scripts/test.sh` starts",
        missing.join(" and ")
    );
    assert!(
        std::env::var_os(REQUIRE_BROKER_ENV).is_none(),
        "{test}: {reason} ({REQUIRE_BROKER_ENV} is set, so it may not be skipped)"
    );
    // Straight to the terminal: the test harness captures `eprintln!` of passing tests.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{test}: skipped, {reason}");
    false
}

/// Returns from the test (skips it) unless the test brokers are configured
/// ([`testing::brokers_configured`](crate::testing::brokers_configured)).
#[macro_export]
macro_rules! require_broker {
    () => {
        if !$crate::testing::brokers_configured(module_path!()) {
            return;
        }
    };
}

/// The test broker's address.
///
/// # Panics
/// When `PARKCAST_KAFKA_BOOTSTRAP` is not set: run the tests with `bash scripts/test.sh`.
pub fn bootstrap_servers() -> String {
    std::env::var(BOOTSTRAP_ENV).unwrap_or_else(|_| {
        panic!(
            "{BOOTSTRAP_ENV} is not set: this test needs the Kafka broker that `bash scripts/test.sh` starts"
        )
    })
}

/// A name no other test (or earlier run) uses: `prefix-<pid>-<counter>-<nanos>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A config for the test broker with fresh topics (created with `partitions` each).
///
/// # Panics
/// When the broker is not reachable or refuses the topics.
pub fn fresh_config(prefix: &str, partitions: i32) -> KafkaConfig {
    let config = KafkaConfig {
        bootstrap_servers: bootstrap_servers(),
        topics: TopicNames::with_prefix(&unique_name(prefix)),
        ..KafkaConfig::default()
    };
    create_topics(
        &config,
        &config.topics.all(),
        partitions,
        Duration::from_secs(10),
    )
    .expect("the test broker should create topics");
    config
}

/// Polls `condition` until it holds or `timeout` passes; true if it held. Tests wait on conditions
/// with a deadline, never on fixed sleeps.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The environment variable naming the broker binary (`noida-db`) that `scripts/test.sh` installs.
pub const BROKER_BIN_ENV: &str = "PARKCAST_NOIDA_BIN";

/// A broker process of a test's own, for faults the shared broker must not suffer: killed with
/// SIGKILL, restarted on the same port with its log, or restarted with an empty log (a broker that
/// lost acknowledged data, or topics deleted and recreated).
///
/// Dropping it kills the process and removes its data folder.
#[derive(Debug)]
pub struct OwnBroker {
    port: u16,
    data_dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl OwnBroker {
    /// Starts a broker on a free loopback port with an empty data folder, and waits for its port.
    ///
    /// # Panics
    /// When `PARKCAST_NOIDA_BIN` is not set (run the tests with `bash scripts/test.sh`), or the
    /// broker does not listen within a minute.
    pub fn start() -> OwnBroker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let data_dir = std::env::temp_dir().join(unique_name("parkcast-own-broker"));
        std::fs::create_dir_all(&data_dir).expect("the broker's data folder");
        let mut broker = OwnBroker {
            port,
            data_dir,
            child: None,
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let binary = std::env::var(BROKER_BIN_ENV).unwrap_or_else(|_| {
            panic!(
                "{BROKER_BIN_ENV} is not set: this test needs the broker binary that `bash scripts/test.sh` installs"
            )
        });
        let child = std::process::Command::new(binary)
            .args(["start", "--only", "kafka", "--kafka-port"])
            .arg(self.port.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the broker should start");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(60), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "the broker should listen on {port}"
        );
    }

    /// `127.0.0.1:PORT`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A config for this broker with fresh topic names (not created yet).
    pub fn config(&self, prefix: &str) -> KafkaConfig {
        KafkaConfig {
            bootstrap_servers: self.bootstrap_servers(),
            topics: TopicNames::with_prefix(&unique_name(prefix)),
            // Reconnect and rejoin quickly, so tests do not wait out production back-offs.
            librdkafka_options: [
                ("reconnect.backoff.max.ms", "500"),
                ("session.timeout.ms", "6000"),
                ("heartbeat.interval.ms", "500"),
            ]
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect(),
            ..KafkaConfig::default()
        }
    }

    /// Kills the process with SIGKILL (no flush, no goodbye) and waits for it to end.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the log it had.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts it again on the same port with an empty log: every topic and offset is gone, as
    /// after a broker lost its disk or an operator recreated the topics.
    pub fn restart_empty(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
        std::fs::create_dir_all(&self.data_dir).expect("the broker's data folder");
        self.spawn();
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
