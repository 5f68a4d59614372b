//! The versioned model registry on disk.
//!
//! Trained forecasters are build outputs that the server must be able to trust, roll back and
//! compare, so every publish produces a new immutable, numbered version instead of overwriting a
//! file in place:
//!
//! ```text
//! <root>/                          usually `models/`
//!   <name>/                        a model line, e.g. `birmingham-gbm`  ([a-z0-9][a-z0-9_-]{0,63})
//!     1/
//!       manifest.json              pretty-printed [`Manifest`]: format version, feature schema hash,
//!                                  horizons, training range, hyperparameters, backtest metrics,
//!                                  size and sha256 of model.bin
//!       model.bin                  the fitted model (opaque bytes to this module)
//!       report.md                  the backtest report
//!       *.svg                      plots and other attachments referenced by the report
//!     2/
//!     .tmp-<pid>-<nanos>-<seq>/    a publish in progress, or the leftovers of a crashed one
//! ```
//!
//! Version directories are plain decimal numbers (1, 2, 3, ... without leading zeros); every other
//! entry (`.tmp-*` directories, READMEs, stray files) is ignored by the readers.
//!
//! Publishing is atomic: all files are written and fsynced in a private `.tmp-*` directory beside
//! the versions, and that directory is then renamed to the next free version number. A reader
//! therefore sees either a complete version or none, and a crash leaves only a `.tmp-*` directory.
//! Two concurrent publishers cannot claim the same number because renaming onto a non-empty
//! directory fails; the loser rewrites its manifest with the next number and tries again.
//!
//! Nothing read back is trusted: [`Registry::load`] checks the manifest's format version, the size
//! and sha256 of the model file and, on request, the feature schema hash before handing out bytes.
//!
//! ```no_run
//! # use parkcast_inference::registry::Registry;
//! let registry = Registry::open("models");
//! if let Some(version) = registry.latest("birmingham-gbm")? {
//!     let (manifest, model) = registry.load("birmingham-gbm", version, Some("ab12..."))?;
//!     println!("{} v{}: {} bytes", manifest.card.name, manifest.version, model.len());
//! }
//! # Ok::<(), parkcast_inference::registry::RegistryError>(())
//! ```

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest format this code writes and the newest it can read.
///
/// Bump it when a manifest change would make older readers misinterpret a version; older readers
/// then refuse the new versions with [`RegistryError::UnsupportedFormat`] instead of guessing.
pub const FORMAT_VERSION: u32 = 1;

/// File name of the manifest inside a version directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of the model inside a version directory.
pub const MODEL_FILE: &str = "model.bin";
/// File name of the backtest report inside a version directory.
pub const REPORT_FILE: &str = "report.md";

/// How many version numbers a publisher tries before giving up on a contended model line.
const PUBLISH_ATTEMPTS: u32 = 8;
/// Prefix of in-progress publish directories; readers skip them.
const TMP_PREFIX: &str = ".tmp-";
/// Longest allowed model name, in bytes.
const MAX_NAME_LEN: usize = 64;
/// Longest allowed attachment file name, in bytes.
const MAX_ATTACHMENT_LEN: usize = 128;

/// Distinguishes temporary directories made by the same process in the same nanosecond.
static TMP_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Everything known about one published model version, stored as `manifest.json`.
///
/// The server decides from this alone whether it can use a model (format, feature schema,
/// horizons, step) and the model file is verified against it before use. The trainer's part is the
/// [`ModelCard`]; the registry owns the rest (format, version, time, the model file's name, size
/// and checksum), so a caller cannot get those wrong. The file keeps one flat JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format, [`FORMAT_VERSION`] when written by this code.
    pub format_version: u32,
    /// Version number (1, 2, 3 ...), assigned by the registry; equals the `<version>` directory.
    pub version: u32,
    /// When the version was published.
    pub created_at: DateTime<Utc>,
    /// What the trainer says about the model.
    #[serde(flatten)]
    pub card: ModelCard,
    /// Model file name inside the version directory, [`MODEL_FILE`] when written by this code.
    pub model_file: String,
    /// Lowercase hex sha256 of the model file.
    pub model_sha256: String,
    /// Size of the model file in bytes.
    pub model_bytes: u64,
}

/// Backtest errors of one model at one horizon, as recorded in the manifest.
///
/// Kept in the manifest (not only in the report) so that versions can be compared and gated by
/// machines without parsing Markdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestMetric {
    /// The evaluated model (the published one or a baseline it is compared against).
    pub model: String,
    /// Horizon in minutes.
    pub horizon_minutes: u32,
    /// Mean absolute error of the occupancy rate.
    pub mae_rate: f64,
    /// Root mean squared error of the occupancy rate.
    pub rmse_rate: f64,
    /// Mean absolute error in slots.
    pub mae_slots: f64,
    /// Root mean squared error in slots.
    pub rmse_slots: f64,
    /// Share of actuals inside the 80% interval (`None` without intervals).
    pub coverage_80: Option<f64>,
    /// Share of actuals inside the 95% interval (`None` without intervals).
    pub coverage_95: Option<f64>,
    /// Forecast-actual pairs behind these numbers.
    pub pairs: u64,
}

/// What the trainer says about a model it publishes: the caller's part of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Model line name, `[a-z0-9][a-z0-9_-]{0,63}`; equals the `<name>` directory.
    pub name: String,
    /// Kind of model, e.g. `"gbm"` or `"linear"`, so the loader knows how to decode `model.bin`.
    pub model_kind: String,
    /// Hex sha256 of the feature names and order, computed by the caller; guards against feeding
    /// the model features it was not trained on.
    pub feature_schema_hash: String,
    /// The feature names in model input order.
    pub feature_names: Vec<String>,
    /// Grid step of the occupancy series the model was trained on, in minutes.
    pub step_minutes: u32,
    /// Forecast horizons the model serves, in minutes.
    pub horizons_minutes: Vec<u32>,
    /// Warehouse source the model learned from (e.g. `"birmingham"`).
    pub source: String,
    /// First local date of the training data (inclusive).
    pub training_start: NaiveDate,
    /// Last local date of the training data (inclusive); must not precede `training_start`.
    pub training_end: NaiveDate,
    /// Hyperparameters as given to the trainer, free-form.
    pub hyperparameters: serde_json::Value,
    /// Backtest metrics, per model and horizon; every number must be finite (JSON cannot store
    /// NaN or infinity).
    pub metrics: Vec<ManifestMetric>,
    /// How the lots' arrivals answer their price, where the source has tariffs whose changes
    /// identify it; absent otherwise (and in manifests written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_response: Option<PriceResponseCard>,
}

/// The price response a model was trained with: what a pricing what-if scales demand by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceResponseCard {
    /// Arrivals scale with (price / reference price) to this power.
    pub elasticity: f64,
    /// Its standard error.
    pub standard_error: f64,
    /// Lot-days the estimate rests on.
    pub lot_days: u64,
    /// Lots whose price changed in the training data.
    pub lots_with_changes: u64,
    /// Each lot's hourly price in force at the end of the training data, cents: the reference
    /// a what-if price is compared with. A lot absent here has no tariff.
    pub reference_cents_per_hour: std::collections::BTreeMap<String, i64>,
}

/// What the caller hands over to publish a version.
///
/// The registry fills in version, creation time, model file name, size, checksum and format
/// version, writes everything and makes it visible in one step.
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    /// The trainer's part of the manifest.
    pub card: ModelCard,
    /// The serialized model, stored as `model.bin`.
    pub model: &'a [u8],
    /// The backtest report, stored as `report.md`.
    pub report_md: &'a str,
    /// Extra files such as plots: (file name like `"mae_by_horizon.svg"`, contents). Names are
    /// `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`, unique, and not one of the registry's own files.
    pub attachments: Vec<(String, String)>,
}

/// A successfully published version.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// The manifest as written, with the assigned version.
    pub manifest: Manifest,
    /// The version directory, `<root>/<name>/<version>`.
    pub dir: PathBuf,
}

/// One version found by [`Registry::list`].
///
/// A broken version (unreadable, corrupt or unsupported manifest) still appears, with the error,
/// so that tooling can show it instead of silently hiding a model that exists on disk.
#[derive(Debug)]
pub struct ListEntry {
    /// Model line name (the directory name).
    pub name: String,
    /// Version number (the directory name).
    pub version: u32,
    /// The version directory.
    pub dir: PathBuf,
    /// The manifest, or why it could not be read.
    pub manifest: Result<Manifest, RegistryError>,
}

/// Everything that can go wrong in the registry; each variant names the path and the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A model name does not follow the naming rule.
    #[error(
        "invalid model name {name:?}: names are 1 to 64 characters of lowercase letters a-z, \
         digits, '_' and '-', starting with a letter or digit"
    )]
    BadName {
        /// The refused name.
        name: String,
    },
    /// An attachment file name is not allowed.
    #[error("invalid attachment name {name:?}: {reason}")]
    BadAttachment {
        /// The refused file name.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// The caller's model card cannot be published.
    #[error("cannot publish {name:?}: {reason}")]
    InvalidCard {
        /// The model name of the card.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The requested version does not exist.
    #[error("model {name:?} version {version} not found at {path}")]
    NotFound {
        /// Model name.
        name: String,
        /// Requested version.
        version: u32,
        /// The version directory that does not exist.
        path: PathBuf,
    },
    /// `manifest.json` is not valid JSON or does not match the manifest structure.
    #[error("{path}: corrupt manifest: {source}")]
    CorruptManifest {
        /// The manifest file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// `manifest.json` parses but contradicts its location or is unsafe to follow.
    #[error("{path}: invalid manifest: {reason}")]
    InvalidManifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The manifest was written in a format this code does not understand.
    #[error(
        "{path}: manifest format version {found} is not supported (this build reads 1 to {supported})"
    )]
    UnsupportedFormat {
        /// The manifest file.
        path: PathBuf,
        /// Format version in the file.
        found: u32,
        /// Newest format this build reads.
        supported: u32,
    },
    /// The model file's sha256 differs from the manifest.
    #[error("{path}: sha256 mismatch: manifest says {expected}, file has {found}")]
    ChecksumMismatch {
        /// The model file.
        path: PathBuf,
        /// Checksum recorded in the manifest.
        expected: String,
        /// Checksum of the file on disk.
        found: String,
    },
    /// The model file's size differs from the manifest.
    #[error("{path}: size mismatch: manifest says {expected} bytes, file has {found} bytes")]
    SizeMismatch {
        /// The model file.
        path: PathBuf,
        /// Size recorded in the manifest.
        expected: u64,
        /// Size of the file on disk.
        found: u64,
    },
    /// The model was trained on a different feature schema than the caller expects.
    #[error(
        "{path}: feature schema hash mismatch: expected {expected}, model was trained with {found}"
    )]
    SchemaMismatch {
        /// The manifest file.
        path: PathBuf,
        /// The hash the caller expects.
        expected: String,
        /// The hash recorded in the manifest.
        found: String,
    },
    /// Every version number tried was taken by concurrent publishers.
    #[error(
        "{path}: could not claim a version number after {attempts} attempts (concurrent publishers?)"
    )]
    Contended {
        /// The model line directory.
        path: PathBuf,
        /// Numbers tried.
        attempts: u32,
    },
}

/// Shorthand for wrapping an I/O error with its path.
fn io_error(path: &Path) -> impl FnOnce(io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A model registry rooted at a directory (usually `models/`).
///
/// Cheap to create and holds no handles, so it can be opened wherever needed; all state is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    root: PathBuf,
}

impl Registry {
    /// Opens the registry at `root`. The directory need not exist: reading an absent registry
    /// finds no models, and the first publish creates it.
    pub fn open(root: impl Into<PathBuf>) -> Registry {
        Registry { root: root.into() }
    }

    /// The registry's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a version, `<root>/<name>/<version>`, whether or not it exists; for
    /// callers that want the report or plots beside the model.
    pub fn version_dir(&self, name: &str, version: u32) -> Result<PathBuf, RegistryError> {
        validate_name(name)?;
        Ok(self.root.join(name).join(version.to_string()))
    }

    /// Publishes a new version of `new.card.name` and returns its manifest and directory.
    ///
    /// The version is one more than the highest existing one. Files are written and fsynced in a
    /// `.tmp-*` directory that is then renamed into place, so the version appears complete or not
    /// at all; if a concurrent publisher takes the number first, the next number is tried.
    pub fn publish(&self, new: NewVersion<'_>) -> Result<Published, RegistryError> {
        let NewVersion {
            card,
            model,
            report_md,
            attachments,
        } = new;
        validate_name(&card.name)?;
        validate_card(&card)?;
        validate_attachments(&attachments)?;

        let name_dir = self.root.join(&card.name);
        fs::create_dir_all(&name_dir).map_err(io_error(&name_dir))?;
        sync_dir(&self.root)?;

        let mut tmp = TempDir::create(&name_dir)?;
        write_synced(&tmp.path.join(MODEL_FILE), model)?;
        write_synced(&tmp.path.join(REPORT_FILE), report_md.as_bytes())?;
        for (file_name, contents) in &attachments {
            write_synced(&tmp.path.join(file_name), contents.as_bytes())?;
        }

        let mut manifest = Manifest {
            format_version: FORMAT_VERSION,
            version: 0,
            created_at: Utc::now(),
            card,
            model_file: MODEL_FILE.to_string(),
            model_sha256: sha256_hex(model),
            model_bytes: model.len() as u64,
        };

        let mut previous = 0;
        for _ in 0..PUBLISH_ATTEMPTS {
            let highest = self
                .versions(&manifest.card.name)?
                .last()
                .copied()
                .unwrap_or(0);
            let version = highest.max(previous).saturating_add(1);
            previous = version;
            manifest.version = version;
            let json = manifest_json(&manifest, &tmp.path)?;
            write_synced(&tmp.path.join(MANIFEST_FILE), &json)?;
            sync_dir(&tmp.path)?;

            let target = name_dir.join(version.to_string());
            match fs::rename(&tmp.path, &target) {
                Ok(()) => {
                    tmp.disarm();
                    sync_dir(&name_dir)?;
                    return Ok(Published {
                        manifest,
                        dir: target,
                    });
                }
                // Someone else claimed this number between our scan and the rename: try the next.
                Err(_) if fs::symlink_metadata(&target).is_ok() => continue,
                Err(source) => {
                    return Err(RegistryError::Io {
                        path: target,
                        source,
                    });
                }
            }
        }
        Err(RegistryError::Contended {
            path: name_dir,
            attempts: PUBLISH_ATTEMPTS,
        })
    }

    /// Every version of every model, sorted by name then version.
    ///
    /// Fails only when the registry itself cannot be read; a version whose manifest is missing,
    /// corrupt or unsupported is listed with its error in [`ListEntry::manifest`]. An absent root
    /// gives an empty list. Entries that are not valid model names or version numbers (including
    /// `.tmp-*` leftovers of crashed publishes) are ignored.
    pub fn list(&self) -> Result<Vec<ListEntry>, RegistryError> {
        let mut names = Vec::new();
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(RegistryError::Io {
                    path: self.root.clone(),
                    source,
                });
            }
        };
        for entry in entries {
            let entry = entry.map_err(io_error(&self.root))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if validate_name(&name).is_ok() && entry.path().is_dir() {
                names.push(name);
            }
        }
        names.sort();

        let mut listed = Vec::new();
        for name in names {
            for version in self.versions(&name)? {
                listed.push(ListEntry {
                    dir: self.root.join(&name).join(version.to_string()),
                    manifest: self.manifest(&name, version),
                    name: name.clone(),
                    version,
                });
            }
        }
        Ok(listed)
    }

    /// The version numbers of a model, ascending; empty if the model has never been published.
    ///
    /// This lists version directories without reading them, so a broken version still counts
    /// (and its number is never reused).
    pub fn versions(&self, name: &str) -> Result<Vec<u32>, RegistryError> {
        validate_name(name)?;
        let name_dir = self.root.join(name);
        let entries = match fs::read_dir(&name_dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(RegistryError::Io {
                    path: name_dir,
                    source,
                });
            }
        };
        let mut versions = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error(&name_dir))?;
            let Some(version) = entry.file_name().to_str().and_then(parse_version) else {
                continue;
            };
            if entry.path().is_dir() {
                versions.push(version);
            }
        }
        versions.sort_unstable();
        Ok(versions)
    }

    /// The highest version of a model, or `None` if it has never been published.
    ///
    /// This is the newest directory, not necessarily a loadable one: [`Registry::load`] it to find
    /// out.
    pub fn latest(&self, name: &str) -> Result<Option<u32>, RegistryError> {
        Ok(self.versions(name)?.last().copied())
    }

    /// Reads and checks the manifest of a version without touching the model file.
    ///
    /// Refuses manifests of an unsupported format, manifests that do not parse, and manifests
    /// whose name, version or model file name contradict their location.
    pub fn manifest(&self, name: &str, version: u32) -> Result<Manifest, RegistryError> {
        let dir = self.version_dir(name, version)?;
        let path = dir.join(MANIFEST_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound && !dir.is_dir() => {
                return Err(RegistryError::NotFound {
                    name: name.to_string(),
                    version,
                    path: dir,
                });
            }
            Err(source) => return Err(RegistryError::Io { path, source }),
        };

        /// Just enough of a manifest to learn its format before trusting the rest of it.
        #[derive(Deserialize)]
        struct FormatProbe {
            format_version: u32,
        }
        let probe: FormatProbe = match serde_json::from_slice(&bytes) {
            Ok(probe) => probe,
            Err(source) => return Err(RegistryError::CorruptManifest { path, source }),
        };
        if probe.format_version == 0 || probe.format_version > FORMAT_VERSION {
            return Err(RegistryError::UnsupportedFormat {
                path,
                found: probe.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let manifest: Manifest = match serde_json::from_slice(&bytes) {
            Ok(manifest) => manifest,
            Err(source) => return Err(RegistryError::CorruptManifest { path, source }),
        };

        let invalid = |reason: String| RegistryError::InvalidManifest {
            path: path.clone(),
            reason,
        };
        if manifest.card.name != name {
            return Err(invalid(format!(
                "names model {:?} but lies in the directory of {name:?}",
                manifest.card.name
            )));
        }
        if manifest.version != version {
            return Err(invalid(format!(
                "says version {} but lies in the directory of version {version}",
                manifest.version
            )));
        }
        if !is_plain_file_name(&manifest.model_file) {
            return Err(invalid(format!(
                "model_file {:?} is not a plain file name inside the version directory",
                manifest.model_file
            )));
        }
        Ok(manifest)
    }

    /// Loads a version for use: returns its manifest and the model bytes, after verifying that
    /// the format is supported, that the model file's size and sha256 match the manifest and,
    /// when `expected_schema_hash` is given, that the model was trained on that feature schema.
    ///
    /// Hashes are compared ignoring ASCII case.
    pub fn load(
        &self,
        name: &str,
        version: u32,
        expected_schema_hash: Option<&str>,
    ) -> Result<(Manifest, Vec<u8>), RegistryError> {
        let manifest = self.manifest(name, version)?;
        let dir = self.version_dir(name, version)?;
        let model_path = dir.join(&manifest.model_file);
        let model = fs::read(&model_path).map_err(io_error(&model_path))?;

        let found_bytes = model.len() as u64;
        if found_bytes != manifest.model_bytes {
            return Err(RegistryError::SizeMismatch {
                path: model_path,
                expected: manifest.model_bytes,
                found: found_bytes,
            });
        }
        let found_sha = sha256_hex(&model);
        if !found_sha.eq_ignore_ascii_case(&manifest.model_sha256) {
            return Err(RegistryError::ChecksumMismatch {
                path: model_path,
                expected: manifest.model_sha256,
                found: found_sha,
            });
        }
        if let Some(expected) = expected_schema_hash
            && !expected.eq_ignore_ascii_case(&manifest.card.feature_schema_hash)
        {
            return Err(RegistryError::SchemaMismatch {
                path: dir.join(MANIFEST_FILE),
                expected: expected.to_string(),
                found: manifest.card.feature_schema_hash,
            });
        }
        Ok((manifest, model))
    }

    /// Publishes a verified copy of `name` v`version` as the next version of the line `to`: the
    /// same model bytes, card (renamed), report (with `note` above it) and attachments.
    ///
    /// Promotion is a copy so that the served line keeps its name: a candidate line is one the
    /// server does not follow (it would activate every candidate before the gate), and serving
    /// the candidate line itself would leave the next retrain looking for `<line>-candidate`.
    pub fn promote(
        &self,
        (name, version): (&str, u32),
        to: &str,
        note: &str,
    ) -> Result<Published, RegistryError> {
        let (manifest, model) = self.load(name, version, None)?;
        let dir = self.version_dir(name, version)?;
        let report_path = dir.join(REPORT_FILE);
        let report = match fs::read_to_string(&report_path) {
            Ok(report) => report,
            Err(error) if error.kind() == io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(RegistryError::Io {
                    path: report_path,
                    source,
                });
            }
        };
        let mut attachments = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
            let path = entry.map_err(io_error(&dir))?.path();
            let Some(file_name) = path.file_name().and_then(|name| name.to_str()) else {
                continue;
            };
            if [MANIFEST_FILE, REPORT_FILE, manifest.model_file.as_str()].contains(&file_name)
                || !path.is_file()
            {
                continue;
            }
            let contents = fs::read_to_string(&path).map_err(io_error(&path))?;
            attachments.push((file_name.to_owned(), contents));
        }
        attachments.sort();
        let mut card = manifest.card;
        card.name = to.to_owned();
        let report_md = format!("> {note}\n\n{report}");
        self.publish(NewVersion {
            card,
            model: &model,
            report_md: &report_md,
            attachments,
        })
    }
}

/// Checks a model name against `[a-z0-9][a-z0-9_-]{0,63}`, which keeps names safe as directory
/// names on every platform and free of path tricks.
pub fn validate_name(name: &str) -> Result<(), RegistryError> {
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(RegistryError::BadName {
            name: name.to_string(),
        })
    }
}

/// Parses a version directory name: a positive decimal number without sign or leading zeros, so
/// that each version has exactly one directory name.
fn parse_version(file_name: &str) -> Option<u32> {
    if file_name.is_empty()
        || file_name.starts_with('0')
        || !file_name.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    file_name.parse().ok()
}

/// Refuses cards that would be published but not read back faithfully.
fn validate_card(card: &ModelCard) -> Result<(), RegistryError> {
    let invalid = |reason: String| RegistryError::InvalidCard {
        name: card.name.clone(),
        reason,
    };
    if card.training_start > card.training_end {
        return Err(invalid(format!(
            "training_start {} is after training_end {}",
            card.training_start, card.training_end
        )));
    }
    // serde_json writes NaN and infinity as null, which would not parse back (or would turn a
    // coverage into None): refuse them here rather than publish an unreadable manifest.
    for metric in &card.metrics {
        let values = [
            ("mae_rate", Some(metric.mae_rate)),
            ("rmse_rate", Some(metric.rmse_rate)),
            ("mae_slots", Some(metric.mae_slots)),
            ("rmse_slots", Some(metric.rmse_slots)),
            ("coverage_80", metric.coverage_80),
            ("coverage_95", metric.coverage_95),
        ];
        for (field, value) in values {
            if let Some(value) = value
                && !value.is_finite()
            {
                return Err(invalid(format!(
                    "metric {field} of {:?} at {} min is {value}; metrics must be finite",
                    metric.model, metric.horizon_minutes
                )));
            }
        }
    }
    Ok(())
}

/// Checks attachment names: plain, portable file names that cannot escape the version directory
/// or overwrite the registry's own files, and no duplicates.
fn validate_attachments(attachments: &[(String, String)]) -> Result<(), RegistryError> {
    for (index, (name, _)) in attachments.iter().enumerate() {
        let refuse = |reason: &str| RegistryError::BadAttachment {
            name: name.clone(),
            reason: reason.to_string(),
        };
        let bytes = name.as_bytes();
        let well_formed = !bytes.is_empty()
            && bytes.len() <= MAX_ATTACHMENT_LEN
            && bytes[0].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !well_formed {
            return Err(refuse(
                "attachment names are 1 to 128 characters of ASCII letters, digits, '.', '_' and \
                 '-', starting with a letter or digit",
            ));
        }
        if [MANIFEST_FILE, MODEL_FILE, REPORT_FILE].contains(&name.as_str()) {
            return Err(refuse("the name is reserved for the registry's own files"));
        }
        if attachments[..index].iter().any(|(other, _)| other == name) {
            return Err(refuse("the name is given more than once"));
        }
    }
    Ok(())
}

/// True if `file_name` is a single normal path component (no separators, `..`, or root).
fn is_plain_file_name(file_name: &str) -> bool {
    let mut components = Path::new(file_name).components();
    matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(component)), None) if component == file_name
    )
}

/// Lowercase hex sha256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The pretty-printed manifest, ending with a newline.
fn manifest_json(manifest: &Manifest, dir: &Path) -> Result<Vec<u8>, RegistryError> {
    let mut json =
        serde_json::to_vec_pretty(manifest).map_err(|source| RegistryError::CorruptManifest {
            path: dir.join(MANIFEST_FILE),
            source,
        })?;
    json.push(b'\n');
    Ok(json)
}

/// [`parkcast_durable::write_synced`]: a rename published afterwards never exposes a file whose
/// data is still only in the page cache.
fn write_synced(path: &Path, contents: &[u8]) -> Result<(), RegistryError> {
    parkcast_durable::write_synced(path, contents).map_err(io_error(path))
}

/// [`parkcast_durable::sync_dir`]: entries created or renamed in `dir` survive a crash.
fn sync_dir(dir: &Path) -> Result<(), RegistryError> {
    parkcast_durable::sync_dir(dir).map_err(io_error(dir))
}

/// A private staging directory for one publish, removed on drop unless it was renamed into place.
struct TempDir {
    path: PathBuf,
    armed: bool,
}

impl TempDir {
    /// Creates `<parent>/.tmp-<pid>-<nanos>-<seq>`, which no other publisher can share.
    fn create(parent: &Path) -> Result<TempDir, RegistryError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or(0);
        let sequence = TMP_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!(
            "{TMP_PREFIX}{}-{nanos}-{sequence}",
            std::process::id()
        ));
        fs::create_dir(&path).map_err(io_error(&path))?;
        Ok(TempDir { path, armed: true })
    }

    /// Keeps the directory: it has been renamed and no longer exists under this path.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: a leftover .tmp-* directory is harmless, readers ignore it.
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(name: &str) -> ModelCard {
        ModelCard {
            name: name.to_string(),
            model_kind: "gbm".to_string(),
            feature_schema_hash: "ab".repeat(32),
            feature_names: vec!["rate_lag_1".to_string(), "hour_sin".to_string()],
            step_minutes: 30,
            horizons_minutes: vec![30, 60, 120],
            source: "birmingham".to_string(),
            training_start: NaiveDate::from_ymd_opt(2016, 10, 4).expect("valid date"),
            training_end: NaiveDate::from_ymd_opt(2016, 11, 30).expect("valid date"),
            hyperparameters: serde_json::json!({"learning_rate": 0.1, "iterations": 200}),
            metrics: vec![ManifestMetric {
                model: "gbm".to_string(),
                horizon_minutes: 60,
                mae_rate: 0.05,
                rmse_rate: 0.08,
                mae_slots: 12.5,
                rmse_slots: 20.25,
                coverage_80: Some(0.75),
                coverage_95: None,
                pairs: 1234,
            }],
            price_response: None,
        }
    }

    fn publish(registry: &Registry, name: &str, model: &[u8]) -> Published {
        registry
            .publish(NewVersion {
                card: card(name),
                model,
                report_md: "# Report\n",
                attachments: vec![("mae_by_horizon.svg".to_string(), "<svg/>".to_string())],
            })
            .expect("publish should succeed")
    }

    fn scratch() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = Registry::open(dir.path().join("models"));
        (dir, registry)
    }

    #[test]
    fn a_promoted_version_is_a_verified_copy_in_the_target_line() {
        let (_dir, registry) = scratch();
        publish(&registry, "city", b"serving model");
        let candidate = publish(&registry, "city-candidate", b"candidate model");
        let promoted = registry
            .promote(
                ("city-candidate", 1),
                "city",
                "promoted from city-candidate v1",
            )
            .expect("promote");
        assert_eq!(promoted.manifest.card.name, "city");
        assert_eq!(promoted.manifest.version, 2);
        assert_eq!(
            promoted.manifest.model_sha256,
            candidate.manifest.model_sha256
        );
        let (_, bytes) = registry.load("city", 2, None).expect("the copy loads");
        assert_eq!(bytes, b"candidate model");
        let report = fs::read_to_string(promoted.dir.join(REPORT_FILE)).expect("report");
        assert!(
            report.starts_with("> promoted from city-candidate v1"),
            "{report}"
        );
        assert!(report.contains("# Report"), "{report}");
        assert_eq!(
            fs::read_to_string(promoted.dir.join("mae_by_horizon.svg")).expect("attachment"),
            "<svg/>"
        );
        // The source stays as it was; a damaged source is refused, not copied.
        assert_eq!(registry.versions("city-candidate").expect("versions"), [1]);
        fs::write(candidate.dir.join(MODEL_FILE), b"candidate modeX").expect("damage");
        assert!(matches!(
            registry.promote(("city-candidate", 1), "city", "again"),
            Err(RegistryError::ChecksumMismatch { .. })
        ));
        assert_eq!(registry.versions("city").expect("versions"), [1, 2]);
    }

    #[test]
    fn publishing_twice_gives_versions_one_and_two() {
        let (_dir, registry) = scratch();
        assert_eq!(registry.latest("city-gbm").expect("latest"), None);
        assert!(registry.list().expect("list of absent root").is_empty());

        let first = publish(&registry, "city-gbm", b"model one");
        let second = publish(&registry, "city-gbm", b"model two");
        publish(&registry, "another", b"x");
        assert_eq!(first.manifest.version, 1);
        assert_eq!(second.manifest.version, 2);
        assert_eq!(second.dir, registry.root().join("city-gbm").join("2"));
        for file in [MANIFEST_FILE, MODEL_FILE, REPORT_FILE, "mae_by_horizon.svg"] {
            assert!(second.dir.join(file).is_file(), "{file} missing");
        }
        assert_eq!(second.manifest.format_version, FORMAT_VERSION);
        assert_eq!(second.manifest.model_file, MODEL_FILE);
        assert_eq!(second.manifest.model_bytes, 9);
        assert_eq!(second.manifest.model_sha256, sha256_hex(b"model two"));

        assert_eq!(registry.versions("city-gbm").expect("versions"), [1, 2]);
        assert_eq!(registry.latest("city-gbm").expect("latest"), Some(2));
        let listed: Vec<(String, u32)> = registry
            .list()
            .expect("list")
            .into_iter()
            .map(|entry| {
                let manifest = entry.manifest.expect("readable manifest");
                assert_eq!(
                    (&manifest.card.name, manifest.version),
                    (&entry.name, entry.version)
                );
                (entry.name, entry.version)
            })
            .collect();
        assert_eq!(
            listed,
            [
                ("another".to_string(), 1),
                ("city-gbm".to_string(), 1),
                ("city-gbm".to_string(), 2)
            ]
        );
        assert_eq!(
            registry.manifest("city-gbm", 2).expect("manifest"),
            second.manifest
        );
    }

    #[test]
    fn manifest_is_pretty_printed_json() {
        let (_dir, registry) = scratch();
        let published = publish(&registry, "city", b"m");
        let text = fs::read_to_string(published.dir.join(MANIFEST_FILE)).expect("read manifest");
        assert!(text.starts_with("{\n  \"format_version\": 1,\n"), "{text}");
    }

    #[test]
    fn load_round_trips_the_bytes() {
        let (_dir, registry) = scratch();
        let bytes: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let published = publish(&registry, "city", &bytes);
        let (manifest, model) = registry
            .load("city", 1, Some(&"AB".repeat(32)))
            .expect("load");
        assert_eq!(model, bytes);
        assert_eq!(manifest, published.manifest);
        assert!(registry.load("city", 1, None).is_ok());
    }

    #[test]
    fn a_flipped_byte_is_a_checksum_mismatch() {
        let (_dir, registry) = scratch();
        let published = publish(&registry, "city", b"some model bytes");
        let path = published.dir.join(MODEL_FILE);
        let mut bytes = fs::read(&path).expect("read model");
        bytes[3] ^= 0x01;
        fs::write(&path, bytes).expect("write model");
        let error = registry.load("city", 1, None).expect_err("must refuse");
        assert!(
            matches!(&error, RegistryError::ChecksumMismatch { path: p, .. } if *p == path),
            "{error}"
        );
    }

    #[test]
    fn a_truncated_model_is_a_size_mismatch() {
        let (_dir, registry) = scratch();
        let published = publish(&registry, "city", b"some model bytes");
        fs::write(published.dir.join(MODEL_FILE), b"some").expect("write model");
        let error = registry.load("city", 1, None).expect_err("must refuse");
        assert!(
            matches!(
                error,
                RegistryError::SizeMismatch {
                    expected: 16,
                    found: 4,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_truncated_manifest_is_corrupt_and_listed_as_broken() {
        let (_dir, registry) = scratch();
        publish(&registry, "city", b"one");
        let published = publish(&registry, "city", b"two");
        let path = published.dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&path).expect("read manifest");
        fs::write(&path, &text[..text.len() / 2]).expect("truncate manifest");

        let error = registry.load("city", 2, None).expect_err("must refuse");
        assert!(
            matches!(&error, RegistryError::CorruptManifest { path: p, .. } if *p == path),
            "{error}"
        );
        assert!(error.to_string().contains("manifest.json"), "{error}");

        let listed = registry.list().expect("list");
        assert_eq!(listed.len(), 2);
        assert!(listed[0].manifest.is_ok());
        assert!(matches!(
            listed[1].manifest,
            Err(RegistryError::CorruptManifest { .. })
        ));
        // The broken version keeps its number.
        assert_eq!(publish(&registry, "city", b"three").manifest.version, 3);
    }

    #[test]
    fn a_future_format_version_is_unsupported() {
        let (_dir, registry) = scratch();
        let published = publish(&registry, "city", b"m");
        let path = published.dir.join(MANIFEST_FILE);
        // A future format may change other fields too: it must still be recognized as future.
        fs::write(
            &path,
            "{\"format_version\": 2, \"name\": {\"new\": \"layout\"}}",
        )
        .expect("write manifest");
        let error = registry.load("city", 1, None).expect_err("must refuse");
        assert!(
            matches!(
                error,
                RegistryError::UnsupportedFormat {
                    found: 2,
                    supported: FORMAT_VERSION,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_wrong_schema_hash_is_refused() {
        let (_dir, registry) = scratch();
        publish(&registry, "city", b"m");
        let error = registry
            .load("city", 1, Some(&"cd".repeat(32)))
            .expect_err("must refuse");
        match error {
            RegistryError::SchemaMismatch {
                expected, found, ..
            } => {
                assert_eq!(expected, "cd".repeat(32));
                assert_eq!(found, "ab".repeat(32));
            }
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn a_manifest_in_the_wrong_place_is_invalid() {
        let (_dir, registry) = scratch();
        let published = publish(&registry, "city", b"m");
        let moved = registry.root().join("city").join("7");
        fs::rename(&published.dir, &moved).expect("move version");
        let error = registry.manifest("city", 7).expect_err("must refuse");
        assert!(
            matches!(error, RegistryError::InvalidManifest { .. }),
            "{error}"
        );
    }

    #[test]
    fn missing_versions_are_not_found() {
        let (_dir, registry) = scratch();
        publish(&registry, "city", b"m");
        for (name, version) in [("city", 2), ("city", 0), ("nobody", 1)] {
            let error = registry.load(name, version, None).expect_err("must refuse");
            assert!(
                matches!(&error, RegistryError::NotFound { name: n, version: v, .. } if n == name && *v == version),
                "{error}"
            );
        }
    }

    #[test]
    fn bad_names_are_refused() {
        let (_dir, registry) = scratch();
        let long = "a".repeat(65);
        for name in [
            "", "City", "-city", "_city", "ci ty", "ci/ty", "..", ".tmp", "città", &long,
        ] {
            let error = registry.versions(name).expect_err("must refuse");
            assert!(
                matches!(&error, RegistryError::BadName { name: n } if n == name),
                "{name:?}: {error}"
            );
            assert!(error.to_string().contains("lowercase"), "{error}");
            let refused = registry.publish(NewVersion {
                card: card(name),
                model: b"m",
                report_md: "",
                attachments: Vec::new(),
            });
            assert!(matches!(refused, Err(RegistryError::BadName { .. })));
        }
        for name in ["a", "0", "city_gbm-2", &"z".repeat(64)] {
            assert!(validate_name(name).is_ok(), "{name:?}");
        }
        assert!(!registry.root().exists(), "nothing written for bad names");
    }

    #[test]
    fn leftovers_and_strays_are_ignored() {
        let (_dir, registry) = scratch();
        publish(&registry, "city", b"m");
        let name_dir = registry.root().join("city");
        let crashed = name_dir.join(".tmp-1234-5678-0");
        fs::create_dir(&crashed).expect("mkdir");
        fs::write(crashed.join(MODEL_FILE), b"partial").expect("write");
        fs::create_dir(name_dir.join("007")).expect("mkdir");
        fs::create_dir(name_dir.join("notes")).expect("mkdir");
        fs::write(name_dir.join("5"), b"a file, not a version").expect("write");
        fs::write(registry.root().join("README.md"), b"# models").expect("write");
        fs::create_dir(registry.root().join("Bad Name")).expect("mkdir");

        assert_eq!(registry.versions("city").expect("versions"), [1]);
        let listed = registry.list().expect("list");
        assert_eq!(listed.len(), 1);
        assert!(listed[0].manifest.is_ok());
        assert_eq!(publish(&registry, "city", b"n").manifest.version, 2);
    }

    #[test]
    fn attachments_are_written_and_checked() {
        let (_dir, registry) = scratch();
        let published = registry
            .publish(NewVersion {
                card: card("city"),
                model: b"m",
                report_md: "# Backtest\n![mae](mae_by_horizon.svg)\n",
                attachments: vec![
                    (
                        "mae_by_horizon.svg".to_string(),
                        "<svg>mae</svg>".to_string(),
                    ),
                    ("coverage.svg".to_string(), "<svg>cov</svg>".to_string()),
                ],
            })
            .expect("publish");
        let read = |file: &str| fs::read_to_string(published.dir.join(file)).expect("read");
        assert_eq!(read("mae_by_horizon.svg"), "<svg>mae</svg>");
        assert_eq!(read("coverage.svg"), "<svg>cov</svg>");
        assert_eq!(
            read(REPORT_FILE),
            "# Backtest\n![mae](mae_by_horizon.svg)\n"
        );

        for bad in [
            vec![("../escape.svg".to_string(), String::new())],
            vec![(".hidden".to_string(), String::new())],
            vec![(MODEL_FILE.to_string(), String::new())],
            vec![(String::new(), String::new())],
            vec![
                ("a.svg".to_string(), String::new()),
                ("a.svg".to_string(), String::new()),
            ],
        ] {
            let error = registry
                .publish(NewVersion {
                    card: card("city"),
                    model: b"m",
                    report_md: "",
                    attachments: bad,
                })
                .expect_err("must refuse");
            assert!(
                matches!(error, RegistryError::BadAttachment { .. }),
                "{error}"
            );
        }
        assert_eq!(registry.versions("city").expect("versions"), [1]);
    }

    #[test]
    fn unrepresentable_cards_are_refused() {
        let (_dir, registry) = scratch();
        let mut nan = card("city");
        nan.metrics[0].mae_rate = f64::NAN;
        let mut infinite_coverage = card("city");
        infinite_coverage.metrics[0].coverage_80 = Some(f64::INFINITY);
        let mut backwards = card("city");
        backwards.training_end = NaiveDate::from_ymd_opt(2016, 1, 1).expect("valid date");
        for card in [nan, infinite_coverage, backwards] {
            let error = registry
                .publish(NewVersion {
                    card,
                    model: b"m",
                    report_md: "",
                    attachments: Vec::new(),
                })
                .expect_err("must refuse");
            assert!(
                matches!(error, RegistryError::InvalidCard { .. }),
                "{error}"
            );
        }
        assert_eq!(registry.latest("city").expect("latest"), None);
    }

    #[test]
    fn concurrent_publishers_get_distinct_versions() {
        let (_dir, registry) = scratch();
        let mut versions: Vec<u32> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4u8)
                .map(|index| {
                    let registry = &registry;
                    scope.spawn(move || publish(registry, "city", &[index]).manifest.version)
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("publisher thread"))
                .collect()
        });
        versions.sort_unstable();
        assert_eq!(versions, [1, 2, 3, 4]);
        for version in 1..=4 {
            registry.load("city", version, None).expect("load");
        }
        let leftovers = fs::read_dir(registry.root().join("city"))
            .expect("read dir")
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().starts_with(TMP_PREFIX))
            .count();
        assert_eq!(leftovers, 0, "no staging directories left behind");
    }
}
