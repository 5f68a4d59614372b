//! The model manager: loads versions from the registry, checks them and hands them to the scorer,
//! on request (`ActivateModel`, `parkcast models activate`) or by following a model line's newest
//! version (the registry watch).
//!
//! Checks, in order: the manifest parses and names its location (registry); the model file's size
//! and SHA-256 match the manifest (registry); the file's format version is one this build reads and
//! its feature schema hash is the one this build computes ([`ServedModel::decode`]); the grid step
//! is the server's and a smoke prediction on every lot gives rates in [0, 1]
//! ([`Scoring::activate`]). Any failure refuses the version with its reason, in the log, in the
//! error returned and in `parkcast_serving_model_activations_total{outcome}`; the active model keeps
//! serving. At start-up with the newest version asked for ([`load_startup`],
//! [`ModelManager::activate_startup`]), a refused version gives way to the next older one that
//! passes, and the registry watch does not try the refused ones again.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use parkcast_inference::registry::{Registry, RegistryError};

use crate::metrics::{ActivationOutcome, ServingMetrics};
use crate::scoring::{Scoring, ScoringError, ServedModel};

/// Why a version was not activated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActivationError {
    /// The registry refused it (missing, unreadable manifest, size or checksum mismatch).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The model's own checks or the smoke prediction refused it.
    #[error(transparent)]
    Scoring(#[from] ScoringError),
    /// The model line has no version.
    #[error("model {0:?} has no published version")]
    NoVersion(String),
}

impl ActivationError {
    /// The outcome it counts as in `parkcast_serving_model_activations_total`.
    pub fn outcome(&self) -> ActivationOutcome {
        match self {
            ActivationError::Registry(error) => registry_outcome(error),
            ActivationError::Scoring(error) => error.outcome(),
            ActivationError::NoVersion(_) => ActivationOutcome::NotFound,
        }
    }
}

/// The outcome a registry refusal counts as: a version that is not there, files that are not what
/// the manifest says (`corrupt`), or the server's own failure (`server_error`: the registry could
/// not be read, or an error that loading never gives), as `crate::status` answers them.
fn registry_outcome(error: &RegistryError) -> ActivationOutcome {
    match error {
        RegistryError::NotFound { .. } | RegistryError::BadName { .. } => {
            ActivationOutcome::NotFound
        }
        RegistryError::CorruptManifest { .. }
        | RegistryError::InvalidManifest { .. }
        | RegistryError::UnsupportedFormat { .. }
        | RegistryError::ChecksumMismatch { .. }
        | RegistryError::SizeMismatch { .. }
        | RegistryError::SchemaMismatch { .. } => ActivationOutcome::Corrupt,
        RegistryError::Io { .. }
        // Publishing errors: loading a version never returns them.
        | RegistryError::BadAttachment { .. }
        | RegistryError::InvalidCard { .. }
        | RegistryError::Contended { .. } => ActivationOutcome::ServerError,
        // `RegistryError` is `#[non_exhaustive]` (another crate): a variant added there counts as
        // a refused version until it is named above.
        _ => ActivationOutcome::Corrupt,
    }
}

/// Seeds the scorer's grid history for a model about to be activated (the lots' last days from the
/// warehouse, on the model's grid); returns the lots seeded.
pub type HistoryLoader = Box<dyn Fn(&Scoring, &ServedModel) -> Result<usize, String> + Send + Sync>;

/// Reads a version (0: the newest) from the registry and decodes it: manifest, size and checksum
/// (the registry), format and feature schema ([`ServedModel::decode`]).
pub fn load_version(
    registry: &Registry,
    name: &str,
    version: u32,
) -> Result<ServedModel, ActivationError> {
    let version = match version {
        0 => registry
            .latest(name)?
            .ok_or_else(|| ActivationError::NoVersion(name.to_owned()))?,
        version => version,
    };
    let (manifest, bytes) = registry.load(name, version, None)?;
    Ok(ServedModel::decode(manifest, &bytes)?)
}

/// The version a server starts on, and the newer versions refused on the way to it.
#[derive(Debug)]
pub struct StartupModel {
    /// The version to activate, loaded and decoded.
    pub served: ServedModel,
    /// Whether the newest version was asked for (0), so an older one may stand in.
    pub newest_asked: bool,
    /// Newer versions refused while looking for it, newest first.
    pub refused: Vec<u32>,
}

/// Reads the version a server starts on: `version` itself, or with 0 the newest version that
/// loads and decodes ([`load_version`]'s checks). Each newer version refused on the way is logged
/// at ERROR with its reason and counted in `parkcast_serving_model_activations_total{outcome}`: a
/// damaged newest version must not keep the server down while an older one is good, and must not
/// go unnoticed either. A version asked for explicitly stands alone: its refusal is the error.
/// `Ok(None)`: the line has no version yet. When no version passes, the error is the newest's.
pub fn load_startup(
    registry: &Registry,
    name: &str,
    version: u32,
    metrics: Option<&ServingMetrics>,
) -> Result<Option<StartupModel>, ActivationError> {
    if version != 0 {
        return load_version(registry, name, version).map(|served| {
            Some(StartupModel {
                served,
                newest_asked: false,
                refused: Vec::new(),
            })
        });
    }
    let mut refused = Vec::new();
    let mut newest_error = None;
    for candidate in registry.versions(name)?.into_iter().rev() {
        match load_version(registry, name, candidate) {
            Ok(served) => {
                return Ok(Some(StartupModel {
                    served,
                    newest_asked: true,
                    refused,
                }));
            }
            Err(error) => {
                tracing::error!(
                    model = name,
                    version = candidate,
                    error = %error,
                    "model refused at start-up; trying the next older version"
                );
                if let Some(metrics) = metrics {
                    metrics.activation(error.outcome());
                }
                refused.push(candidate);
                newest_error.get_or_insert(error);
            }
        }
    }
    newest_error.map_or(Ok(None), Err)
}

/// Loads and activates model versions.
pub struct ModelManager {
    registry: Registry,
    scoring: Arc<Scoring>,
    metrics: Option<ServingMetrics>,
    history: Option<HistoryLoader>,
    /// One activation at a time (two racing would both rebuild every lot's state).
    busy: Mutex<()>,
    /// Versions the watch found refused, so it does not retry them every round.
    refused: Mutex<BTreeSet<(String, u32)>>,
}

impl std::fmt::Debug for ModelManager {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ModelManager")
            .field("registry", &self.registry.root())
            .finish()
    }
}

impl ModelManager {
    /// A manager over a registry directory.
    pub fn new(
        registry: impl Into<PathBuf>,
        scoring: Arc<Scoring>,
        metrics: Option<ServingMetrics>,
    ) -> ModelManager {
        ModelManager {
            registry: Registry::open(registry),
            scoring,
            metrics,
            history: None,
            busy: Mutex::new(()),
            refused: Mutex::new(BTreeSet::new()),
        }
    }

    /// The same, seeding the scorer's grid history through `loader` before the first model is
    /// activated (whenever the scorer has none: the server started without a model, or this is the
    /// first).
    pub fn with_history(mut self, loader: HistoryLoader) -> ModelManager {
        self.history = Some(loader);
        self
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The scorer.
    pub fn scoring(&self) -> &Arc<Scoring> {
        &self.scoring
    }

    /// Start-up: remembers the versions [`load_startup`] refused (the registry watch skips them),
    /// then activates its version. When that activation is refused too (the smoke prediction)
    /// and the newest was asked for, the next older versions are tried in turn; the error is the
    /// first refusal's.
    pub fn activate_startup(
        &self,
        startup: StartupModel,
    ) -> Result<Arc<ServedModel>, ActivationError> {
        let name = startup.served.manifest.card.name.clone();
        let mut version = startup.served.manifest.version;
        for refused in startup.refused {
            self.remember_refused(&name, refused);
        }
        let first = match self.activate_loaded(startup.served) {
            Ok(served) => return Ok(served),
            Err(error) if startup.newest_asked => error,
            Err(error) => return Err(error),
        };
        self.remember_refused(&name, version);
        let older: Vec<u32> = self
            .registry
            .versions(&name)?
            .into_iter()
            .filter(|candidate| *candidate < version)
            .rev()
            .collect();
        for candidate in older {
            version = candidate;
            match self.activate(&name, version) {
                Ok(served) => return Ok(served),
                Err(_) => self.remember_refused(&name, version),
            }
        }
        Err(first)
    }

    /// Marks a version refused, so the registry watch does not try it again.
    pub fn remember_refused(&self, name: &str, version: u32) {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((name.to_owned(), version));
    }

    /// Loads, checks and activates a version (0: the newest). Blocking: file reads and rebuilding
    /// every lot's feature state.
    pub fn activate(&self, name: &str, version: u32) -> Result<Arc<ServedModel>, ActivationError> {
        self.install(
            || load_version(&self.registry, name, version),
            name,
            version,
        )
    }

    /// Activates a version already loaded with [`load_version`] (the server's start-up reads the
    /// configured one first, for its grid step), with the same checks, history seeding and
    /// metrics as [`ModelManager::activate`].
    pub fn activate_loaded(
        &self,
        served: ServedModel,
    ) -> Result<Arc<ServedModel>, ActivationError> {
        let (name, version) = (served.manifest.card.name.clone(), served.manifest.version);
        self.install(|| Ok(served), &name, version)
    }

    /// Loads and checks a version (0: the newest) and puts it in shadow beside the active model
    /// ([`Scoring::shadow`]): scored on the live stream, never served. Blocking like
    /// [`ModelManager::activate`].
    pub fn shadow(&self, name: &str, version: u32) -> Result<Arc<ServedModel>, ActivationError> {
        let _busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        let result = load_version(&self.registry, name, version)
            .and_then(|served| Ok(self.scoring.shadow(served)?));
        if let Err(error) = &result {
            tracing::error!(model = name, version, error = %error, "shadow refused");
        }
        result
    }

    fn install(
        &self,
        load: impl FnOnce() -> Result<ServedModel, ActivationError>,
        name: &str,
        version: u32,
    ) -> Result<Arc<ServedModel>, ActivationError> {
        let _busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        let result = load().and_then(|served| self.seed_and_activate(served));
        let outcome = match &result {
            Ok(served) => {
                if let Some(metrics) = &self.metrics {
                    metrics
                        .model_version
                        .set(i64::from(served.manifest.version));
                }
                ActivationOutcome::Activated
            }
            Err(error) => {
                tracing::error!(model = name, version, error = %error, "model refused");
                error.outcome()
            }
        };
        if let Some(metrics) = &self.metrics {
            metrics.activation(outcome);
        }
        result
    }

    fn seed_and_activate(&self, served: ServedModel) -> Result<Arc<ServedModel>, ActivationError> {
        if let Some(loader) = &self.history
            && !self.scoring.has_history()
        {
            match loader(&self.scoring, &served) {
                Ok(lots) => tracing::info!(lots, model = %served.label(), "grid history seeded"),
                // Forecasts then start once live grid values accumulate; not a reason to refuse.
                Err(error) => tracing::warn!(error, "grid history could not be read"),
            }
        }
        Ok(self.scoring.activate(served)?)
    }

    /// Follows a model line: every `interval`, activates its newest version if it is newer than the
    /// active one and was not refused before. Runs on its own thread until `stop` is set.
    pub fn follow(
        self: &Arc<Self>,
        name: String,
        interval: Duration,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let manager = Arc::clone(self);
        std::thread::Builder::new()
            .name("parkcast-model-watch".to_owned())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    manager.follow_once(&name);
                    let mut waited = Duration::ZERO;
                    while waited < interval && !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                        waited += Duration::from_millis(100);
                    }
                }
            })
    }

    /// One round of [`ModelManager::follow`]; returns whether a version was activated.
    pub fn follow_once(&self, name: &str) -> bool {
        let latest = match self.registry.latest(name) {
            Ok(Some(latest)) => latest,
            Ok(None) => return false,
            Err(error) => {
                tracing::warn!(model = name, error = %error, "cannot read the registry");
                return false;
            }
        };
        let active = self
            .scoring
            .model()
            .filter(|served| served.manifest.card.name == name)
            .map_or(0, |served| served.manifest.version);
        let key = (name.to_owned(), latest);
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&key);
        if latest <= active || refused {
            return false;
        }
        match self.activate(name, latest) {
            Ok(_) => true,
            Err(_) => {
                self.remember_refused(name, latest);
                false
            }
        }
    }
}
