//! Helpers for tests against the real broker that the test command starts.
//!
//! `scripts/test.sh` starts a Kafka-protocol broker on loopback and exports its address as
//! `PARKCAST_KAFKA_BOOTSTRAP`. Tests that need a broker fail with a message saying so when it is not
//! set: a broker test that silently passes without a broker proves nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{KafkaConfig, TopicNames, create_topics};

/// The environment variable with the test broker's address.
pub const BOOTSTRAP_ENV: &str = "PARKCAST_KAFKA_BOOTSTRAP";

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
