//! The server's one config file: ingestion, serving, scoring and request limits, with profiles.
//!
//! Layers, later wins: the profile's defaults ([`Profile`]), the TOML file, `PARKCAST__`
//! environment variables (`PARKCAST__SERVE__ADMIN_TOKEN=...`, nested keys joined by `__`), then
//! command-line flags. [`ServiceConfig::validate`] runs at start and names the key of any wrong
//! value, so a typo stops the server before it touches the network (unknown keys are refused when
//! the file is read).

use std::net::SocketAddr;
use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ingest::{IngestConfig, IngestConfigError};
use crate::quality::QualityConfig;
use crate::replicas::{ReplicasConfig, ReplicasConfigError};
use crate::requests::RequestLimits;
use crate::scoring::ScoringConfig;

/// Deployment profiles: the defaults differ where a laptop and a cluster differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// A developer's machine: loopback addresses, the newest model version followed, activation
    /// over gRPC off unless a token is set.
    #[default]
    Local,
    /// A shared test cluster: all interfaces, the newest version followed, a token required.
    Staging,
    /// Production: all interfaces, versions activated explicitly (no following), a token of at
    /// least 16 characters required, a model named.
    Production,
}

impl std::str::FromStr for Profile {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "local" => Ok(Profile::Local),
            "staging" => Ok(Profile::Staging),
            "production" => Ok(Profile::Production),
            other => Err(format!(
                "unknown profile {other:?} (local, staging or production)"
            )),
        }
    }
}

/// Which clock answers are computed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ClockMode {
    /// The wall clock: production.
    #[default]
    Wall,
    /// The newest event time in the stream: replays of past data (the demo).
    Stream,
}

/// The serving part of the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// gRPC address.
    pub grpc_addr: SocketAddr,
    /// The HTTP address: Prometheus `/metrics` and the REST/JSON face ([`crate::rest`]).
    pub metrics_addr: SocketAddr,
    /// The model registry folder.
    pub registry: PathBuf,
    /// The model line to serve (empty: none until one is activated over gRPC).
    pub model: String,
    /// Its version to start with (0: the newest).
    pub model_version: u32,
    /// Activate newer versions of `model` as they are published (checked every
    /// `watch_interval_ms`; nothing to follow without `model`).
    pub follow_latest: bool,
    /// How often the registry is checked for a newer version, ms.
    pub watch_interval_ms: u64,
    /// Bearer token `ActivateModel` needs (empty: activation over gRPC is disabled). Set it from
    /// the environment (`PARKCAST__SERVE__ADMIN_TOKEN`), not in a file under version control.
    pub admin_token: String,
    /// The clock answers are computed at.
    pub clock: ClockMode,
    /// A lot whose newest event is older than this is answered as stale, ms.
    pub lot_stale_after_ms: i64,
    /// Publish the pricing feed to the forecast topic.
    pub publish_forecasts: bool,
}

impl ServeConfig {
    fn for_profile(profile: Profile) -> ServeConfig {
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let (grpc_addr, metrics_addr) = match profile {
            Profile::Local => (local(50_051), local(9_464)),
            Profile::Staging | Profile::Production => (any(50_051), any(9_464)),
        };
        ServeConfig {
            grpc_addr,
            metrics_addr,
            registry: PathBuf::from("models"),
            model: String::new(),
            model_version: 0,
            follow_latest: profile != Profile::Production,
            watch_interval_ms: 5_000,
            admin_token: String::new(),
            clock: ClockMode::Wall,
            lot_stale_after_ms: 600_000,
            publish_forecasts: true,
        }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig::for_profile(Profile::Local)
    }
}

/// Everything `parkcast serve` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// The profile these values started from (informational once loaded).
    pub profile: Profile,
    /// Ingestion: broker, topics, group, checkpoints, time rules.
    pub ingest: IngestConfig,
    /// The server: addresses, model, registry, token, clock.
    pub serve: ServeConfig,
    /// The scorer's debounce.
    pub scoring: ScoringConfig,
    /// How live accuracy is judged (the drift alarm).
    pub quality: QualityConfig,
    /// Bounds of requests.
    pub limits: RequestLimits,
    /// Replicas of the group answering for each other (off for a single server).
    pub replicas: ReplicasConfig,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig::for_profile(Profile::Local)
    }
}

/// A config value that is wrong, with its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The ingestion part.
    #[error("ingest: {0}")]
    Ingest(#[from] IngestConfigError),
    /// The replicas part.
    #[error(transparent)]
    Replicas(#[from] ReplicasConfigError),
    /// Another key.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key, dotted (`serve.admin_token`).
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl ServiceConfig {
    /// The defaults of a profile.
    pub fn for_profile(profile: Profile) -> ServiceConfig {
        let mut ingest = IngestConfig::default();
        if profile == Profile::Production {
            // Production brokers are remote and sometimes slow to answer a probe.
            ingest.stale_after_ms = 30_000;
        }
        ServiceConfig {
            profile,
            ingest,
            serve: ServeConfig::for_profile(profile),
            scoring: ScoringConfig::default(),
            quality: QualityConfig::default(),
            limits: RequestLimits::default(),
            replicas: ReplicasConfig::default(),
        }
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.ingest.validate()?;
        self.replicas.validate()?;
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        let serve = &self.serve;
        if serve.grpc_addr == serve.metrics_addr && serve.grpc_addr.port() != 0 {
            return invalid("serve.metrics_addr", "must differ from serve.grpc_addr");
        }
        if serve.watch_interval_ms == 0 {
            return invalid("serve.watch_interval_ms", "must be positive");
        }
        if serve.lot_stale_after_ms <= 0 {
            return invalid("serve.lot_stale_after_ms", "must be positive");
        }
        if !serve.model.is_empty()
            && parkcast_inference::registry::validate_name(&serve.model).is_err()
        {
            return invalid(
                "serve.model",
                "must be a model line name: lowercase letters, digits, '_' and '-'",
            );
        }
        match self.profile {
            Profile::Local => {}
            Profile::Staging | Profile::Production => {
                if serve.admin_token.is_empty() {
                    return invalid(
                        "serve.admin_token",
                        "must be set outside the local profile (PARKCAST__SERVE__ADMIN_TOKEN)",
                    );
                }
            }
        }
        if self.profile == Profile::Production {
            if serve.admin_token.len() < 16 {
                return invalid(
                    "serve.admin_token",
                    "must be at least 16 characters in production",
                );
            }
            if serve.model.is_empty() {
                return invalid("serve.model", "must name the model line in production");
            }
        }
        if self.scoring.debounce_ms == 0 || self.scoring.debounce_ms > 10_000 {
            return invalid("scoring.debounce_ms", "must be 1 to 10000");
        }
        if self.scoring.refresh_all_ms < self.scoring.debounce_ms {
            return invalid(
                "scoring.refresh_all_ms",
                "must be at least scoring.debounce_ms",
            );
        }
        let quality = &self.quality;
        if !(quality.drift_factor.is_finite() && quality.drift_factor > 1.0) {
            return invalid("quality.drift_factor", "must be finite and above 1");
        }
        if quality.drift_hours == 0 || quality.drift_hours > 24 {
            return invalid(
                "quality.drift_hours",
                "must be 1 to 24 (scores are kept a day)",
            );
        }
        if quality.min_pairs_per_hour == 0 {
            return invalid("quality.min_pairs_per_hour", "must be positive");
        }
        let limits = &self.limits;
        if limits.max_batch == 0 || limits.max_batch > 10_000 {
            return invalid("limits.max_batch", "must be 1 to 10000");
        }
        if limits.max_horizons == 0 || limits.max_horizons > 1_000 {
            return invalid("limits.max_horizons", "must be 1 to 1000");
        }
        if limits.max_radius_m == 0 {
            return invalid("limits.max_radius_m", "must be positive");
        }
        if limits.max_results == 0 {
            return invalid("limits.max_results", "must be positive");
        }
        if limits.max_watched_lots == 0 {
            return invalid("limits.max_watched_lots", "must be positive");
        }
        if limits.max_watch_streams == 0 || limits.max_watch_streams > 1_000_000 {
            return invalid("limits.max_watch_streams", "must be 1 to 1000000");
        }
        Ok(())
    }
}

/// Errors of loading a config file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file named does not exist.
    #[error("config file {} does not exist", .0.display())]
    Missing(PathBuf),
    /// A layer does not parse, has a wrong type or an unknown key (figment names the key).
    #[error("invalid configuration (defaults < file < PARKCAST__ environment): {0}")]
    Invalid(#[from] Box<figment::Error>),
}

/// Loads a config: built-in defaults, then the TOML file, then `PARKCAST__` environment variables
/// (`PARKCAST__INGEST__KAFKA__BOOTSTRAP_SERVERS=host:9092` sets `ingest.kafka.bootstrap_servers`).
pub fn load_config<T: Serialize + DeserializeOwned + Default>(
    file: Option<&std::path::Path>,
) -> Result<T, LoadError> {
    load_layered(T::default(), file)
}

/// [`load_config`] from given defaults (a profile's).
pub fn load_layered<T: Serialize + DeserializeOwned>(
    defaults: T,
    file: Option<&std::path::Path>,
) -> Result<T, LoadError> {
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Some(file) = file {
        if !file.is_file() {
            return Err(LoadError::Missing(file.to_path_buf()));
        }
        figment = figment.merge(Toml::file(file));
    }
    figment
        .merge(Env::prefixed("PARKCAST__").split("__"))
        .extract()
        .map_err(|error| LoadError::Invalid(Box::new(error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_differ_where_deployments_do_and_are_checked() {
        let local = ServiceConfig::for_profile(Profile::Local);
        assert!(local.serve.grpc_addr.ip().is_loopback());
        local.validate().expect("local defaults are valid");
        let mut production = ServiceConfig::for_profile(Profile::Production);
        assert!(!production.serve.follow_latest);
        assert!(production.serve.grpc_addr.ip().is_unspecified());
        let error = production.validate().expect_err("no token");
        assert!(
            error.to_string().starts_with("serve.admin_token"),
            "{error}"
        );
        production.serve.admin_token = "short".into();
        assert!(production.validate().is_err());
        production.serve.admin_token = "a-long-enough-admin-token".into();
        let error = production.validate().expect_err("no model");
        assert!(error.to_string().starts_with("serve.model"), "{error}");
        production.serve.model = "birmingham".into();
        production.validate().expect("complete");
        assert_eq!("staging".parse(), Ok(Profile::Staging));
        assert!("prod".parse::<Profile>().is_err());
    }

    #[test]
    fn each_wrong_value_names_its_key() {
        type Spoil = fn(&mut ServiceConfig);
        let cases: [(&str, Spoil); 13] = [
            ("serve.watch_interval_ms", |c| c.serve.watch_interval_ms = 0),
            ("serve.metrics_addr", |c| {
                c.serve.metrics_addr = c.serve.grpc_addr
            }),
            ("serve.model", |c| c.serve.model = "Bad Name".into()),
            ("scoring.debounce_ms", |c| c.scoring.debounce_ms = 0),
            ("limits.max_batch", |c| c.limits.max_batch = 0),
            ("limits.max_watch_streams", |c| {
                c.limits.max_watch_streams = 0
            }),
            ("ingest: group_id", |c| c.ingest.group_id = String::new()),
            ("quality.drift_factor", |c| c.quality.drift_factor = 0.9),
            ("quality.drift_hours", |c| c.quality.drift_hours = 0),
            ("quality.min_pairs_per_hour", |c| {
                c.quality.min_pairs_per_hour = 0
            }),
            ("replicas.expire_after_ms", |c| {
                c.replicas.expire_after_ms = c.replicas.heartbeat_interval_ms
            }),
            ("replicas.topic", |c| c.replicas.topic = "no spaces".into()),
            ("ingest: changelog_topic", |c| {
                c.ingest.changelog_topic = "a/b".into();
            }),
        ];
        for (key, spoil) in cases {
            let mut config = ServiceConfig::default();
            spoil(&mut config);
            let error = config.validate().expect_err(key);
            assert!(error.to_string().starts_with(key), "{key}: {error}");
        }
    }

    #[test]
    fn the_example_config_loads_validates_and_matches_the_defaults() {
        let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"));
        let loaded: ServiceConfig =
            load_config(Some(path.as_path())).expect("the example should load");
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
        let error =
            load_config::<ServiceConfig>(Some(path.as_path())).expect_err("a typo is an error");
        assert!(format!("{error:#}").contains("group_idd"), "{error:#}");
    }

    #[test]
    fn a_wrong_value_is_an_error_naming_its_key() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[scoring]\ndebounce_ms = \"soon\"\n").expect("written");
        let error = load_config::<ServiceConfig>(Some(path.as_path())).expect_err("a type error");
        assert!(format!("{error:#}").contains("debounce_ms"), "{error:#}");
        std::fs::write(&path, "[limits]\nmax_batch = 0\n").expect("written");
        let config = load_config::<ServiceConfig>(Some(path.as_path())).expect("parses");
        let error = config.validate().expect_err("out of range");
        assert!(error.to_string().starts_with("limits.max_batch"), "{error}");
    }
}
