//! Kafka settings: typed fields for what parkcast relies on, a map for everything else.

use std::collections::BTreeMap;

use parkcast_proto::Topic;
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// Names of the topics parkcast reads and writes.
///
/// The defaults are `../shared/DESIGN.md`'s names; a prefix gives tests (and staging clusters) their
/// own set on a shared broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicNames {
    /// Slot sensor readings (`SensorReading`).
    pub sensor: String,
    /// Session entries and exits (`SessionEvent`).
    pub session: String,
    /// Customer scans (`CustomerScan`).
    pub scan: String,
    /// Payment slips (`PaymentSlip`).
    pub payment: String,
    /// Forecasts for the pricing service.
    pub forecast: String,
    /// Messages that could not be applied (`DeadLetter`).
    pub deadletter: String,
}

impl Default for TopicNames {
    fn default() -> Self {
        TopicNames::with_prefix("")
    }
}

impl TopicNames {
    /// The default names ([`Topic::default_name`]) behind `prefix.` (`prefix.parkcast.sensor.v1`,
    /// ...); an empty prefix gives the defaults.
    pub fn with_prefix(prefix: &str) -> TopicNames {
        let name = |topic: Topic| {
            if prefix.is_empty() {
                topic.default_name().to_owned()
            } else {
                format!("{prefix}.{}", topic.default_name())
            }
        };
        TopicNames {
            sensor: name(Topic::Sensor),
            session: name(Topic::Session),
            scan: name(Topic::Scan),
            payment: name(Topic::Payment),
            forecast: name(Topic::Forecast),
            deadletter: name(Topic::DeadLetter),
        }
    }

    /// The configured name of `topic`.
    pub fn name(&self, topic: Topic) -> &str {
        match topic {
            Topic::Sensor => &self.sensor,
            Topic::Session => &self.session,
            Topic::Scan => &self.scan,
            Topic::Payment => &self.payment,
            Topic::Forecast => &self.forecast,
            Topic::DeadLetter => &self.deadletter,
        }
    }

    /// The input topics (what producers write and the archiver reads).
    pub fn inputs(&self) -> [&str; 4] {
        Topic::INPUTS.map(|topic| self.name(topic))
    }

    /// Every topic.
    pub fn all(&self) -> [&str; 6] {
        Topic::ALL.map(|topic| self.name(topic))
    }
}

/// How to reach the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]` of the brokers.
    pub bootstrap_servers: String,
    /// Client id the brokers log and quota by.
    pub client_id: String,
    /// Topic names.
    pub topics: TopicNames,
    /// Any other librdkafka setting (`security.protocol`, `sasl.*`, `fetch.max.bytes`, ...), passed
    /// through unchecked. Settings parkcast manages itself (see [`KafkaConfig::validate`]) are refused
    /// here, so a config file cannot silently turn off what recovery relies on.
    pub librdkafka_options: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:9092".to_owned(),
            client_id: "parkcast".to_owned(),
            topics: TopicNames::default(),
            librdkafka_options: BTreeMap::new(),
        }
    }
}

/// What is wrong with a Kafka config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaConfigError {
    /// No broker address.
    #[error("kafka.bootstrap_servers is empty")]
    NoBootstrapServers,
    /// A topic name Kafka would refuse.
    #[error("topic name {name:?} is not a legal Kafka topic name (1-249 of [a-zA-Z0-9._-])")]
    BadTopicName {
        /// The name.
        name: String,
    },
    /// Two roles share one topic.
    #[error("topic {name:?} is configured for two roles")]
    SharedTopic {
        /// The name.
        name: String,
    },
    /// A librdkafka option that parkcast sets itself.
    #[error(
        "kafka.librdkafka_options.{key} is managed by parkcast (offsets and assignment rely on it)"
    )]
    ManagedOption {
        /// The option.
        key: String,
    },
}

/// Whether Kafka accepts `name` as a topic name: 1 to 249 of `[a-zA-Z0-9._-]`.
pub fn legal_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte))
}

/// librdkafka settings parkcast owns: exactly-once application and co-partitioning depend on them.
const MANAGED_OPTIONS: [&str; 6] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "partition.assignment.strategy",
    "isolation.level",
];

impl KafkaConfig {
    /// Checks the settings without touching the network.
    pub fn validate(&self) -> Result<(), KafkaConfigError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(KafkaConfigError::NoBootstrapServers);
        }
        let names = self.topics.all();
        for (index, name) in names.iter().enumerate() {
            if !legal_topic_name(name) {
                return Err(KafkaConfigError::BadTopicName {
                    name: (*name).to_owned(),
                });
            }
            if names[..index].contains(name) {
                return Err(KafkaConfigError::SharedTopic {
                    name: (*name).to_owned(),
                });
            }
        }
        if let Some(key) = self
            .librdkafka_options
            .keys()
            .find(|key| MANAGED_OPTIONS.contains(&key.as_str()))
        {
            return Err(KafkaConfigError::ManagedOption { key: key.clone() });
        }
        Ok(())
    }

    /// A librdkafka config with the broker, the client id and the pass-through options.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id);
        for (key, value) in &self.librdkafka_options {
            config.set(key, value);
        }
        config
    }

    /// A consumer config for reading by `assign` only (a topic of shared state read whole, or one
    /// record of it): librdkafka wants a group id even then, but this consumer never joins it (no
    /// `subscribe`), never commits, and gets no end-of-partition events.
    pub fn reader_config(&self, group_id: &str) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        config
    }

    /// A producer config: idempotent (no duplicates from retries, order kept per partition), lz4,
    /// a short linger so replays batch well. Pass-through options override these defaults.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        for (key, value) in PRODUCER_DEFAULTS {
            if config.get(key).is_none() {
                config.set(key, value);
            }
        }
        config
    }
}

/// Producer settings unless the config file says otherwise.
const PRODUCER_DEFAULTS: [(&str, &str); 5] = [
    ("enable.idempotence", "true"),
    ("compression.type", "lz4"),
    ("linger.ms", "5"),
    ("batch.num.messages", "10000"),
    ("queue.buffering.max.messages", "1000000"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_managed_options_are_refused() {
        assert_eq!(KafkaConfig::default().validate(), Ok(()));
        let mut config = KafkaConfig::default();
        config
            .librdkafka_options
            .insert("enable.auto.commit".into(), "true".into());
        assert!(matches!(
            config.validate(),
            Err(KafkaConfigError::ManagedOption { .. })
        ));
        let shared = KafkaConfig {
            topics: TopicNames {
                session: "parkcast.sensor.v1".into(),
                ..TopicNames::default()
            },
            ..KafkaConfig::default()
        };
        assert!(matches!(
            shared.validate(),
            Err(KafkaConfigError::SharedTopic { .. })
        ));
        let bad = KafkaConfig {
            topics: TopicNames::with_prefix("a b"),
            ..KafkaConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(KafkaConfigError::BadTopicName { .. })
        ));
    }

    #[test]
    fn user_options_pass_through_to_producers() {
        let mut config = KafkaConfig::default();
        config
            .librdkafka_options
            .insert("linger.ms".into(), "50".into());
        assert_eq!(config.producer_config().get("linger.ms"), Some("50"));
        assert_eq!(
            config.producer_config().get("enable.idempotence"),
            Some("true")
        );
    }
}
