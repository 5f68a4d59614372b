//! What the streaming commands (`ingest`, `replay`, `archive`) share: where the broker is, the topic
//! names, and the topology (lots and their slots) read from a warehouse.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use parkcast_features::warehouse::Warehouse;
use parkcast_kafka::{EmbeddedBroker, KafkaConfig, TopicNames};
use parkcast_serving::config::ServiceConfig;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where the broker is.
#[derive(Debug, Args, Clone, Default)]
pub struct BrokerArgs {
    /// Brokers (`host:port,...`); overrides the config file's `ingest.kafka.bootstrap_servers`.
    #[arg(long, env = "PARKCAST_KAFKA_BOOTSTRAP")]
    pub bootstrap: Option<String>,
    /// Prefix of the topic names (`<prefix>.parkcast.sensor.v1`, ...): several setups share one
    /// broker. Overrides the config file's topic names.
    #[arg(long)]
    pub topic_prefix: Option<String>,
}

/// Where live state comes from: the lots (a warehouse's `dim_slot`), the config, the broker, the
/// group and the checkpoints. Shared by `parkcast ingest` and `parkcast serve`.
#[derive(Debug, Args)]
pub struct LiveArgs {
    /// The warehouse whose `dim_slot` lists the lots and slots to accept.
    #[command(flatten)]
    pub warehouse: super::WarehouseLocation,
    /// Config file (TOML: `[ingest]`, `[ingest.kafka]`, `[serve]`, `[scoring]`, `[limits]`; see
    /// serving/config.example.toml); `PARKCAST__...` environment variables override it
    /// (`PARKCAST__INGEST__KAFKA__BOOTSTRAP_SERVERS`, `PARKCAST__SERVE__ADMIN_TOKEN`).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Profile whose defaults the config starts from: local, staging or production.
    #[arg(long, env = "PARKCAST_PROFILE", default_value = "local")]
    pub profile: parkcast_serving::config::Profile,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Consumer group (overrides the config file).
    #[arg(long)]
    pub group: Option<String>,
    /// This replica's static group membership name (`ingest.instance_id`): unique per replica and
    /// stable across its restarts, so a restarted replica takes its partitions back at once.
    #[arg(long, env = "PARKCAST_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Checkpoint folder (overrides the config file).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

impl LiveArgs {
    /// The service config (profile defaults < file < environment < these flags), checked, and
    /// the topology.
    pub fn load(
        &self,
    ) -> Result<(
        ServiceConfig,
        std::sync::Arc<parkcast_serving::topology::Topology>,
    )> {
        self.load_with(|_| {})
    }

    /// [`LiveArgs::load`] with the command's own flags applied last (`command_flags`), then
    /// checked: the config is validated once, after every layer, so a value that only a flag
    /// supplies (`parkcast serve --admin-token`) counts.
    pub fn load_with(
        &self,
        command_flags: impl FnOnce(&mut ServiceConfig),
    ) -> Result<(
        ServiceConfig,
        std::sync::Arc<parkcast_serving::topology::Topology>,
    )> {
        let mut config: ServiceConfig = load_layered(
            ServiceConfig::for_profile(self.profile),
            self.config.as_ref(),
        )?;
        config.profile = self.profile;
        self.broker.apply(&mut config.ingest.kafka);
        if let Some(group) = &self.group {
            config.ingest.group_id.clone_from(group);
        }
        if let Some(instance_id) = &self.instance_id {
            config.ingest.instance_id.clone_from(instance_id);
        }
        if let Some(state_dir) = &self.state_dir {
            config.ingest.state_dir.clone_from(state_dir);
        }
        command_flags(&mut config);
        config.validate().context("invalid configuration")?;
        let warehouse = self.warehouse.open()?;
        let topology =
            parkcast_serving::topology::Topology::new(topology_from_warehouse(&warehouse)?)
                .context("invalid topology")?;
        Ok((config, std::sync::Arc::new(topology)))
    }
}

/// Loads a config: built-in defaults, then the TOML file, then `PARKCAST__` environment variables
/// (`PARKCAST__INGEST__KAFKA__BOOTSTRAP_SERVERS=host:9092` sets `ingest.kafka.bootstrap_servers`).
pub fn load_config<T: Serialize + DeserializeOwned + Default>(file: Option<&PathBuf>) -> Result<T> {
    load_layered(T::default(), file)
}

/// [`load_config`] from given defaults (a profile's).
pub fn load_layered<T: Serialize + DeserializeOwned>(
    defaults: T,
    file: Option<&PathBuf>,
) -> Result<T> {
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Some(file) = file {
        if !file.is_file() {
            bail!("config file {} does not exist", file.display());
        }
        figment = figment.merge(Toml::file(file));
    }
    figment
        .merge(Env::prefixed("PARKCAST__").split("__"))
        .extract()
        .context("invalid configuration (defaults < file < PARKCAST__ environment)")
}

impl BrokerArgs {
    /// Applies the flags to a Kafka config.
    pub fn apply(&self, kafka: &mut KafkaConfig) {
        if let Some(bootstrap) = &self.bootstrap {
            kafka.bootstrap_servers.clone_from(bootstrap);
        }
        if let Some(prefix) = &self.topic_prefix {
            kafka.topics = TopicNames::with_prefix(prefix);
        }
    }
}

/// Starts the in-process broker with every topic of `kafka` (`partitions` each) and points the
/// config at it.
pub fn start_embedded(kafka: &mut KafkaConfig, partitions: i32) -> Result<EmbeddedBroker> {
    let broker = EmbeddedBroker::start().context("failed to start the embedded Kafka broker")?;
    broker
        .create_topics(&kafka.topics.all(), partitions)
        .context("failed to create topics on the embedded broker")?;
    kafka.bootstrap_servers = broker.bootstrap_servers();
    Ok(broker)
}

/// Lots and their slot ids from a warehouse's `dim_slot`, lots and slots sorted by id (the same
/// order on every run, which checkpoints rely on).
pub fn topology_from_warehouse(warehouse: &Warehouse) -> Result<Vec<(String, Vec<String>)>> {
    let topology = parkcast_archive::source::Topology::read(warehouse)
        .context("failed to read dim_slot (the topology of lots and slots)")?;
    if topology.lots().is_empty() {
        bail!(
            "the warehouse at {} has no slots in dim_slot",
            warehouse.root().display()
        );
    }
    Ok(topology.pairs().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_loads_validates_and_matches_the_defaults() {
        let path = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/serving/config.example.toml"
        ));
        let loaded: ServiceConfig = load_config(Some(&path)).expect("the example should load");
        loaded.validate().expect("the example should be valid");
        let mut expected = ServiceConfig::default();
        expected
            .ingest
            .kafka
            .librdkafka_options
            .insert("session.timeout.ms".into(), "45000".into());
        assert_eq!(loaded, expected, "the example documents the local defaults");
    }

    #[test]
    fn unknown_fields_in_a_config_file_are_refused() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[ingest]\ngroup_idd = \"typo\"\n").expect("written");
        let error = load_config::<ServiceConfig>(Some(&path)).expect_err("a typo is an error");
        assert!(format!("{error:#}").contains("group_idd"), "{error:#}");
    }

    #[test]
    fn a_wrong_value_is_an_error_naming_its_key() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[scoring]\ndebounce_ms = \"soon\"\n").expect("written");
        let error = load_config::<ServiceConfig>(Some(&path)).expect_err("a type error");
        assert!(format!("{error:#}").contains("debounce_ms"), "{error:#}");
        std::fs::write(&path, "[limits]\nmax_batch = 0\n").expect("written");
        let config = load_config::<ServiceConfig>(Some(&path)).expect("parses");
        let error = config.validate().expect_err("out of range");
        assert!(error.to_string().starts_with("limits.max_batch"), "{error}");
    }
}
