//! The one mapping from what the gRPC services refuse to a `tonic::Status`.
//!
//! Handlers return a [`ServiceError`]; its conversion below is the only place a status code is
//! chosen, with an exhaustive `match` over every domain error it can carry, so a new variant must
//! be given its code here before the crate compiles. The codes are what a gRPC client expects:
//!
//! | what | code |
//! | --- | --- |
//! | a malformed request (missing lot, bad horizon, coordinates, batch size, empty model name, bad model name) | `INVALID_ARGUMENT` |
//! | an unknown lot, model or version | `NOT_FOUND` |
//! | no model active yet for a forecast, or the registry busy with a concurrent publish | `UNAVAILABLE` (retry later) |
//! | too many open watch streams | `RESOURCE_EXHAUSTED` |
//! | no or a wrong bearer token | `UNAUTHENTICATED` |
//! | activation disabled (no admin token configured) | `FAILED_PRECONDITION` |
//! | a version that exists but fails its checks on activation (corrupt, wrong schema or step) | `FAILED_PRECONDITION`, and the active model keeps serving |
//! | the registry's disk failing, a manifest that cannot be read when listing or describing, a task that panicked | `INTERNAL` |
//!
//! A registry I/O error is the server's problem, not the request's: `INTERNAL`, never
//! `FAILED_PRECONDITION` (which tells a client to change something before retrying).

use std::path::PathBuf;

use parkcast_inference::registry::RegistryError;
use tonic::{Code, Status};

use crate::models::ActivationError;
use crate::requests::{RequestError, client_message};

/// What a gRPC handler refuses, before it becomes a status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The request is malformed or names an unknown lot.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A forecast was asked before any model is active.
    #[error("no model is active yet; {hint}")]
    NoModel {
        /// What to ask instead.
        hint: &'static str,
    },
    /// Every watch stream slot is taken.
    #[error(
        "{limit} watch streams are open, the most this server keeps (limits.max_watch_streams); close one or retry later"
    )]
    TooManyWatches {
        /// `limits.max_watch_streams`.
        limit: usize,
    },
    /// `ActivateModel` without a configured admin token.
    #[error("model activation over gRPC is disabled: the server has no admin token configured")]
    ActivationDisabled,
    /// No bearer token in the metadata.
    #[error("activation needs `authorization: Bearer <token>` metadata")]
    MissingToken,
    /// A bearer token that is not the admin token.
    #[error("the bearer token is wrong")]
    WrongToken,
    /// A model request with an empty name.
    #[error("name is empty")]
    EmptyModelName,
    /// Reading or activating a model version failed.
    #[error("{source}")]
    Model {
        /// Why.
        source: ActivationError,
        /// The model name the client sent (quoted at most in part in the message).
        name: String,
        /// The registry's folder (paths are written from it down).
        root: PathBuf,
        /// Whether the version was being activated (else listed or described).
        activating: bool,
    },
    /// A blocking task panicked or was cancelled.
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
}

impl ServiceError {
    /// The status code, decided here and nowhere else.
    pub fn code(&self) -> Code {
        match self {
            ServiceError::Request(error) => request_code(error),
            ServiceError::NoModel { .. } => Code::Unavailable,
            ServiceError::TooManyWatches { .. } => Code::ResourceExhausted,
            ServiceError::ActivationDisabled => Code::FailedPrecondition,
            ServiceError::MissingToken | ServiceError::WrongToken => Code::Unauthenticated,
            ServiceError::EmptyModelName => Code::InvalidArgument,
            ServiceError::Model {
                source, activating, ..
            } => model_code(source, *activating),
            ServiceError::Task(_) => Code::Internal,
        }
    }
}

/// Unknown lots are `NOT_FOUND` (also inside a batch); every other request error says what to fix.
fn request_code(error: &RequestError) -> Code {
    match error {
        RequestError::UnknownLot(_) => Code::NotFound,
        RequestError::InBatch { error, .. } => request_code(error),
        RequestError::MissingLot
        | RequestError::HorizonNotServed { .. }
        | RequestError::TooManyHorizons { .. }
        | RequestError::HorizonsAndArrival
        | RequestError::ArrivalTwice
        | RequestError::ArrivalInPast { .. }
        | RequestError::ArrivalTooFar { .. }
        | RequestError::EmptyBatch
        | RequestError::BatchTooLarge { .. }
        | RequestError::BadCoordinates { .. }
        | RequestError::RadiusOutOfRange { .. }
        | RequestError::TooManyResults { .. }
        | RequestError::UnknownSlotType(_)
        | RequestError::WatchSize { .. } => Code::InvalidArgument,
    }
}

/// A version that does not exist is `NOT_FOUND`; one that exists but fails a check is refused
/// on activation (`FAILED_PRECONDITION`) and an internal error when merely read; the registry's
/// own failures are the server's (`INTERNAL`, or `UNAVAILABLE` while another publish holds it).
fn model_code(error: &ActivationError, activating: bool) -> Code {
    let refused = if activating {
        Code::FailedPrecondition
    } else {
        Code::Internal
    };
    match error {
        ActivationError::NoVersion(_) => Code::NotFound,
        ActivationError::Scoring(_) => refused,
        ActivationError::Registry(error) => match error {
            RegistryError::NotFound { .. } => Code::NotFound,
            RegistryError::BadName { .. } => Code::InvalidArgument,
            RegistryError::Contended { .. } => Code::Unavailable,
            RegistryError::Io { .. } => Code::Internal,
            RegistryError::CorruptManifest { .. }
            | RegistryError::InvalidManifest { .. }
            | RegistryError::UnsupportedFormat { .. }
            | RegistryError::ChecksumMismatch { .. }
            | RegistryError::SizeMismatch { .. }
            | RegistryError::SchemaMismatch { .. } => refused,
            // Publishing errors: a reader never meets them.
            RegistryError::BadAttachment { .. } | RegistryError::InvalidCard { .. } => {
                Code::Internal
            }
            // RegistryError is #[non_exhaustive] (another crate): a variant added there is the
            // server's problem until it is mapped above.
            _ => Code::Internal,
        },
        // ActivationError is this crate's and non_exhaustive only for other crates: the match
        // above is exhaustive.
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Status {
        let code = error.code();
        let message = match &error {
            ServiceError::Model {
                source,
                name,
                root,
                activating,
            } => {
                let message = client_message(&source.to_string(), &[name], Some(root));
                if *activating && code == Code::FailedPrecondition {
                    format!("refused, the active model keeps serving: {message}")
                } else {
                    message
                }
            }
            other => other.to_string(),
        };
        Status::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn model(error: RegistryError, activating: bool) -> Status {
        ServiceError::Model {
            source: ActivationError::Registry(error),
            name: "city".to_owned(),
            root: PathBuf::from("/srv/models"),
            activating,
        }
        .into()
    }

    fn io() -> RegistryError {
        RegistryError::Io {
            path: PathBuf::from("/srv/models/city/3/manifest.json"),
            source: std::io::Error::other("disk on fire"),
        }
    }

    fn checksum() -> RegistryError {
        RegistryError::ChecksumMismatch {
            path: PathBuf::from("/srv/models/city/3/model.bin"),
            expected: "ab".to_owned(),
            found: "cd".to_owned(),
        }
    }

    #[test]
    fn every_refusal_has_its_code() {
        let cases: Vec<(ServiceError, Code)> = vec![
            (
                ServiceError::Request(RequestError::UnknownLot("zz".to_owned())),
                Code::NotFound,
            ),
            (
                ServiceError::Request(RequestError::MissingLot),
                Code::InvalidArgument,
            ),
            (
                ServiceError::NoModel { hint: "ask later" },
                Code::Unavailable,
            ),
            (
                ServiceError::TooManyWatches { limit: 4 },
                Code::ResourceExhausted,
            ),
            (ServiceError::ActivationDisabled, Code::FailedPrecondition),
            (ServiceError::MissingToken, Code::Unauthenticated),
            (ServiceError::WrongToken, Code::Unauthenticated),
            (ServiceError::EmptyModelName, Code::InvalidArgument),
        ];
        for (error, code) in cases {
            let text = error.to_string();
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{text}");
            assert_eq!(status.message(), text);
        }
    }

    #[test]
    fn a_registry_io_error_is_internal_and_a_bad_version_refused_only_when_activating() {
        for activating in [false, true] {
            assert_eq!(model(io(), activating).code(), Code::Internal);
        }
        let refused = model(checksum(), true);
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(
            refused
                .message()
                .starts_with("refused, the active model keeps serving: "),
            "{}",
            refused.message()
        );
        assert!(
            !refused.message().contains("/srv/models"),
            "paths are written from the registry down: {}",
            refused.message()
        );
        assert_eq!(model(checksum(), false).code(), Code::Internal);
        let missing = RegistryError::NotFound {
            name: "city".to_owned(),
            version: 9,
            path: Path::new("/srv/models/city/9").to_path_buf(),
        };
        assert_eq!(model(missing, true).code(), Code::NotFound);
        let busy = RegistryError::Contended {
            path: PathBuf::from("/srv/models/city"),
            attempts: 3,
        };
        assert_eq!(model(busy, false).code(), Code::Unavailable);
        let no_version = ServiceError::Model {
            source: ActivationError::NoVersion("city".to_owned()),
            name: "city".to_owned(),
            root: PathBuf::from("/srv/models"),
            activating: true,
        };
        assert_eq!(no_version.code(), Code::NotFound);
    }
}
