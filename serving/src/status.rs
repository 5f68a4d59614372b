//! The one conversion from what the gRPC services refuse to a [`tonic::Status`].
//!
//! Handlers return a [`ServiceError`]; `From<ServiceError> for Status` below is the only place a
//! status code is chosen. It matches every domain error exhaustively (the request checks', the
//! model manager's, the scorer's, the registry's), so a new variant does not compile until it has
//! a code. The codes are the ones a gRPC client expects:
//!
//! | refusal | code |
//! | --- | --- |
//! | a malformed request: a missing or out-of-range field, a request over a per-request bound (horizons, batch size, results, watched lots), an empty or invalid model name | `INVALID_ARGUMENT` |
//! | an unknown lot (also inside a batch), model line or version | `NOT_FOUND` |
//! | a forecast asked while no model is active | `UNAVAILABLE` |
//! | the lot's owner (another replica) did not answer, even once more after a fresh look at who owns it; the lot is moving between replicas; a forwarded request reached a replica that no longer owns the lot | `UNAVAILABLE` (retry: ownership settles within a rebalance) |
//! | the owner answered with a refusal | the owner's code and message |
//! | every watch stream slot of the server taken | `RESOURCE_EXHAUSTED` |
//! | no bearer token, or a wrong one | `UNAUTHENTICATED` |
//! | activation over gRPC disabled (no admin token configured) | `FAILED_PRECONDITION` |
//! | `ActivateModel` of a version that fails its checks (files damaged, wrong feature schema or grid step, smoke prediction) | `FAILED_PRECONDITION`; the active model keeps serving |
//! | `ListModels`/`DescribeModel` of a damaged manifest | `INTERNAL` |
//! | the registry cannot be read (an I/O error), or a handler's task failed | `INTERNAL` |
//!
//! Why these where there was a choice:
//! - A request over a per-request bound is wrong whatever the server's load, so it is
//!   `INVALID_ARGUMENT` and the message names the bound; `RESOURCE_EXHAUSTED` is kept for the one
//!   server-wide capacity (open watch streams), which frees up when other clients leave.
//! - Without an admin token no credential can activate a model: that is the server's
//!   configuration, not the caller's identity, so `FAILED_PRECONDITION` rather than
//!   `UNAUTHENTICATED` or `PERMISSION_DENIED`.
//! - A registry I/O error is the server's fault and says nothing about the version asked for, so
//!   never `FAILED_PRECONDITION` (which tells the client the version is unfit and to stop asking).
//!   It is `INTERNAL`, not `UNAVAILABLE`: an unreadable file or a permission error stays until an
//!   operator acts, while `UNAVAILABLE` invites clients and retry policies to repeat the call; and
//!   `INTERNAL` is what `ListModels`/`DescribeModel` already answered, so all three RPCs agree.
//!
//! Errors that carry client input or registry paths ([`ServiceError::Registry`],
//! [`ServiceError::Activation`]) reach the client through [`client_message`]: long input quoted in
//! part, paths written from the registry down.

use std::path::PathBuf;

use parkcast_inference::registry::RegistryError;
use tonic::Status;

use crate::models::ActivationError;
use crate::requests::{RequestError, client_message};
use crate::scoring::ScoringError;

/// Everything the gRPC services refuse, before it becomes a [`Status`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The request is malformed or names a lot that does not exist.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// `GetAvailability` or `BatchGetAvailability` asked for forecasts while no model is active.
    #[error("no model is active yet; ask without horizons or arrival time for the live picture")]
    NoModel,
    /// `GetPricingBands` while no model is active.
    #[error("no model is active yet, so there are no bands to price")]
    NoModelForBands,
    /// A what-if price for a lot the active model knows no tariff of.
    #[error(
        "lot {lot_id:?} has no tariff in the active model's data: a what-if price has nothing to be compared with"
    )]
    NoTariff {
        /// The lot asked for.
        lot_id: String,
    },
    /// A what-if price while the active model has no price response.
    #[error(
        "the active model {name} v{version} has no price response (its training data had no price changes that identify one), so it cannot answer a what-if price"
    )]
    NoPriceResponse {
        /// The model.
        name: String,
        /// Its version.
        version: u32,
    },
    /// `SearchNearby` asked for an arrival time while no model is active.
    #[error("no model is active yet; search without an arrival time for the live picture")]
    NoModelForArrival,
    /// `GetLiveQuality` while no model is active: nothing has been forecast, so nothing scored.
    #[error("no model is active yet, so no forecast has been scored")]
    NoModelForQuality,
    /// Every watch stream this server keeps is open.
    #[error(
        "{max} watch streams are open, the most this server keeps (limits.max_watch_streams); \
         close one or retry later"
    )]
    TooManyWatches {
        /// `limits.max_watch_streams`.
        max: usize,
    },
    /// `ShadowModel` before a model is active.
    #[error("no model is active yet, so there is nothing to shadow a candidate beside")]
    NoModelToShadow,
    /// `ClearShadow` with no candidate in shadow.
    #[error("no candidate is in shadow")]
    NoShadow,
    /// An admin RPC (`ActivateModel`, `ShadowModel`, `ClearShadow`) on a server without an admin
    /// token.
    #[error("model activation over gRPC is disabled: the server has no admin token configured")]
    ActivationDisabled,
    /// `ActivateModel` without a bearer token.
    #[error("activation needs `authorization: Bearer <token>` metadata")]
    MissingToken,
    /// `ActivateModel` with a bearer token that is not the admin token.
    #[error("the bearer token is wrong")]
    WrongToken,
    /// A `Models` request without a model name.
    #[error("name is empty")]
    EmptyModelName,
    /// `ListModels` or `DescribeModel` could not read what was asked from the registry.
    #[error("{error}")]
    Registry {
        /// What went wrong (boxed: it is most of the enum's size, and rare).
        error: Box<ActivationError>,
        /// The model name the client sent (empty for `ListModels`).
        asked: String,
        /// The registry folder, left out of the client's message.
        root: PathBuf,
    },
    /// `ActivateModel` did not activate the version; the active model keeps serving.
    #[error("{error}")]
    Activation {
        /// Why (boxed: it is most of the enum's size, and rare).
        error: Box<ActivationError>,
        /// The model name the client sent.
        asked: String,
        /// The registry folder, left out of the client's message.
        root: PathBuf,
    },
    /// The blocking task of a handler panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    /// The replica owning the lot did not answer a forwarded request, twice.
    #[error(
        "lot {lot_id:?} is owned by replica {replica} at {address}, which did not answer ({reason}); \
         retry: if it is gone, another replica takes the lot over within a rebalance"
    )]
    OwnerUnreachable {
        /// The lot asked for.
        lot_id: String,
        /// The owner's id.
        replica: String,
        /// The owner's gRPC address.
        address: String,
        /// What the last attempt met.
        reason: String,
    },
    /// The lot's partition left this replica and no other has claimed it yet.
    #[error("lot {lot_id:?} is moving between replicas (a rebalance); retry in a moment")]
    Moving {
        /// The lot asked for.
        lot_id: String,
    },
    /// A request forwarded by another replica for a lot this one does not own (it moved).
    #[error("replica {replica} does not own lot {lot_id:?} (it moved); ask again")]
    NotOwner {
        /// The lot asked for.
        lot_id: String,
        /// This replica's id.
        replica: String,
    },
    /// The owner refused a forwarded request: its status, passed on.
    #[error("{}", .0.message())]
    Peer(Status),
}

impl From<ServiceError> for Status {
    fn from(refusal: ServiceError) -> Status {
        match &refusal {
            ServiceError::Request(request) => {
                Status::new(request_code(request), refusal.to_string())
            }
            ServiceError::NoModel
            | ServiceError::NoModelForArrival
            | ServiceError::NoModelForBands => Status::unavailable(refusal.to_string()),
            ServiceError::TooManyWatches { .. } => Status::resource_exhausted(refusal.to_string()),
            ServiceError::NoShadow => Status::not_found(refusal.to_string()),
            ServiceError::ActivationDisabled
            | ServiceError::NoModelForQuality
            | ServiceError::NoModelToShadow => Status::failed_precondition(refusal.to_string()),
            ServiceError::MissingToken | ServiceError::WrongToken => {
                Status::unauthenticated(refusal.to_string())
            }
            ServiceError::EmptyModelName | ServiceError::NoTariff { .. } => {
                Status::invalid_argument(refusal.to_string())
            }
            ServiceError::NoPriceResponse { .. } => {
                Status::failed_precondition(refusal.to_string())
            }
            ServiceError::Registry { error, asked, root } => {
                let message = client_message(&error.to_string(), &[asked], Some(root));
                match model_fault(error) {
                    ModelFault::BadName => Status::invalid_argument(message),
                    ModelFault::Missing => Status::not_found(message),
                    // Listing or describing reads only manifests: one that is damaged is the
                    // server's data gone bad, not something the client can change.
                    ModelFault::Damaged | ModelFault::Server => Status::internal(message),
                }
            }
            ServiceError::Activation { error, asked, root } => {
                let message = client_message(&error.to_string(), &[asked], Some(root));
                match model_fault(error) {
                    ModelFault::BadName => Status::invalid_argument(message),
                    ModelFault::Missing => Status::not_found(message),
                    ModelFault::Damaged => Status::failed_precondition(format!(
                        "refused, the active model keeps serving: {message}"
                    )),
                    ModelFault::Server => Status::internal(format!(
                        "not activated, the active model keeps serving: {message}"
                    )),
                }
            }
            ServiceError::Task(_) => Status::internal(refusal.to_string()),
            ServiceError::OwnerUnreachable { .. }
            | ServiceError::Moving { .. }
            | ServiceError::NotOwner { .. } => Status::unavailable(refusal.to_string()),
            ServiceError::Peer(status) => Status::new(status.code(), status.message()),
        }
    }
}

/// The code of a refused request: `NOT_FOUND` for what does not exist, `INVALID_ARGUMENT` for the
/// rest; a batch answers with the code of its bad request.
fn request_code(error: &RequestError) -> tonic::Code {
    match error {
        RequestError::UnknownLot(_) => tonic::Code::NotFound,
        RequestError::InBatch { error: inner, .. } => request_code(inner),
        RequestError::MissingLot
        | RequestError::BadPrice(_)
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
        | RequestError::WatchSize { .. } => tonic::Code::InvalidArgument,
    }
}

/// What a model error says about the version asked for, whichever RPC asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelFault {
    /// The name cannot be a model line's.
    BadName,
    /// No such model line or version.
    Missing,
    /// The version exists, but its files or the model fail a check.
    Damaged,
    /// The server could not do its part (the registry unreadable), or an error that reading a
    /// version never gives: nothing about the version itself.
    Server,
}

fn model_fault(error: &ActivationError) -> ModelFault {
    match error {
        ActivationError::Registry(registry) => registry_fault(registry),
        ActivationError::Scoring(scoring) => scoring_fault(scoring),
        ActivationError::NoVersion(_) => ModelFault::Missing,
    }
}

fn registry_fault(error: &RegistryError) -> ModelFault {
    match error {
        RegistryError::BadName { .. } => ModelFault::BadName,
        RegistryError::NotFound { .. } => ModelFault::Missing,
        RegistryError::CorruptManifest { .. }
        | RegistryError::InvalidManifest { .. }
        | RegistryError::UnsupportedFormat { .. }
        | RegistryError::ChecksumMismatch { .. }
        | RegistryError::SizeMismatch { .. }
        | RegistryError::SchemaMismatch { .. } => ModelFault::Damaged,
        RegistryError::Io { .. } => ModelFault::Server,
        // Publishing errors: the server only reads the registry.
        RegistryError::BadAttachment { .. }
        | RegistryError::InvalidCard { .. }
        | RegistryError::Contended { .. } => ModelFault::Server,
        // `RegistryError` is `#[non_exhaustive]` (parkcast-inference), so a wildcard is required:
        // a variant added there is the server's fault until it is named above.
        _ => ModelFault::Server,
    }
}

fn scoring_fault(error: &ScoringError) -> ModelFault {
    match error {
        ScoringError::Corrupt { .. }
        | ScoringError::Schema { .. }
        | ScoringError::Step { .. }
        | ScoringError::Smoke { .. } => ModelFault::Damaged,
        // Nothing about the version: the server has no grid to shadow it on yet.
        ScoringError::NoActiveModel { .. } => ModelFault::Server,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const ROOT: &str = "/srv/parkcast/models";

    fn in_registry(relative: &str) -> PathBuf {
        Path::new(ROOT).join(relative)
    }

    /// Every registry error, as loading `toy` v2 could meet it (the publishing ones too).
    fn registry_errors() -> Vec<(RegistryError, ModelFault, &'static str)> {
        let corrupt_json = serde_json::from_str::<serde_json::Value>("{").expect_err("not JSON");
        vec![
            (
                RegistryError::Io {
                    path: in_registry("toy/2/model.bin"),
                    source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
                },
                ModelFault::Server,
                "toy/2/model.bin: permission denied",
            ),
            (
                RegistryError::BadName {
                    name: "Toy!".to_owned(),
                },
                ModelFault::BadName,
                "invalid model name \"Toy!\"",
            ),
            (
                RegistryError::BadAttachment {
                    name: "../x".to_owned(),
                    reason: "a path".to_owned(),
                },
                ModelFault::Server,
                "invalid attachment name \"../x\"",
            ),
            (
                RegistryError::InvalidCard {
                    name: "toy".to_owned(),
                    reason: "no metrics".to_owned(),
                },
                ModelFault::Server,
                "cannot publish \"toy\": no metrics",
            ),
            (
                RegistryError::NotFound {
                    name: "toy".to_owned(),
                    version: 2,
                    path: in_registry("toy/2"),
                },
                ModelFault::Missing,
                "model \"toy\" version 2 not found at toy/2",
            ),
            (
                RegistryError::CorruptManifest {
                    path: in_registry("toy/2/manifest.json"),
                    source: corrupt_json,
                },
                ModelFault::Damaged,
                "toy/2/manifest.json: corrupt manifest",
            ),
            (
                RegistryError::InvalidManifest {
                    path: in_registry("toy/2/manifest.json"),
                    reason: "names version 3".to_owned(),
                },
                ModelFault::Damaged,
                "toy/2/manifest.json: invalid manifest: names version 3",
            ),
            (
                RegistryError::UnsupportedFormat {
                    path: in_registry("toy/2/manifest.json"),
                    found: 9,
                    supported: 1,
                },
                ModelFault::Damaged,
                "manifest format version 9 is not supported",
            ),
            (
                RegistryError::ChecksumMismatch {
                    path: in_registry("toy/2/model.bin"),
                    expected: "aa".to_owned(),
                    found: "bb".to_owned(),
                },
                ModelFault::Damaged,
                "toy/2/model.bin: sha256 mismatch",
            ),
            (
                RegistryError::SizeMismatch {
                    path: in_registry("toy/2/model.bin"),
                    expected: 10,
                    found: 9,
                },
                ModelFault::Damaged,
                "toy/2/model.bin: size mismatch",
            ),
            (
                RegistryError::SchemaMismatch {
                    path: in_registry("toy/2/manifest.json"),
                    expected: "aa".to_owned(),
                    found: "bb".to_owned(),
                },
                ModelFault::Damaged,
                "feature schema hash mismatch",
            ),
            (
                RegistryError::Contended {
                    path: in_registry("toy"),
                    attempts: 5,
                },
                ModelFault::Server,
                "could not claim a version number",
            ),
        ]
    }

    /// Every other error of loading and activating `toy` v2.
    fn activation_errors() -> Vec<(ActivationError, ModelFault, &'static str)> {
        let (name, version) = ("toy".to_owned(), 2);
        let mut errors: Vec<_> = registry_errors()
            .into_iter()
            .map(|(error, fault, says)| (ActivationError::Registry(error), fault, says))
            .collect();
        errors.extend([
            (
                ActivationError::NoVersion(name.clone()),
                ModelFault::Missing,
                "model \"toy\" has no published version",
            ),
            (
                ActivationError::Scoring(ScoringError::Corrupt {
                    name: name.clone(),
                    version,
                    reason: "not a model".to_owned(),
                }),
                ModelFault::Damaged,
                "toy v2 is corrupt: not a model",
            ),
            (
                ActivationError::Scoring(ScoringError::Schema {
                    name: name.clone(),
                    version,
                    expected: "aa".to_owned(),
                    found: "bb".to_owned(),
                }),
                ModelFault::Damaged,
                "trained on feature schema bb",
            ),
            (
                ActivationError::Scoring(ScoringError::Step {
                    name: name.clone(),
                    version,
                    expected: 15,
                    found: 5,
                }),
                ModelFault::Damaged,
                "5-minute grid",
            ),
            (
                ActivationError::Scoring(ScoringError::Smoke {
                    name,
                    version,
                    reason: "rate 1.5".to_owned(),
                }),
                ModelFault::Damaged,
                "failed its smoke prediction: rate 1.5",
            ),
        ]);
        errors
    }

    fn cancelled_task() -> tokio::task::JoinError {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime should start");
        runtime.block_on(async {
            let task = tokio::spawn(std::future::pending::<()>());
            task.abort();
            task.await.expect_err("the task should be cancelled")
        })
    }

    fn request_errors() -> Vec<(RequestError, tonic::Code, &'static str)> {
        use tonic::Code::{InvalidArgument, NotFound};
        vec![
            (RequestError::MissingLot, InvalidArgument, "lot_id is empty"),
            (
                RequestError::UnknownLot("zz".to_owned()),
                NotFound,
                "lot \"zz\" is not known",
            ),
            (
                RequestError::HorizonNotServed {
                    horizon: 145,
                    max: 120,
                },
                InvalidArgument,
                "horizon 145 min is not served",
            ),
            (
                RequestError::TooManyHorizons { asked: 17, max: 16 },
                InvalidArgument,
                "17 horizons asked; at most 16",
            ),
            (
                RequestError::HorizonsAndArrival,
                InvalidArgument,
                "horizon_minutes or arrival_time_ms, not both",
            ),
            (
                RequestError::ArrivalTwice,
                InvalidArgument,
                "arrival_time_ms or arrival_in_minutes, not both",
            ),
            (
                RequestError::ArrivalInPast {
                    arrival_ms: 1,
                    behind_ms: 60_000,
                },
                InvalidArgument,
                "60000 ms in the past",
            ),
            (
                RequestError::ArrivalTooFar {
                    ahead_minutes: 600,
                    max_minutes: 120,
                },
                InvalidArgument,
                "600 min ahead; at most 120 min",
            ),
            (RequestError::EmptyBatch, InvalidArgument, "no requests"),
            (
                RequestError::BatchTooLarge {
                    size: 101,
                    max: 100,
                },
                InvalidArgument,
                "101 requests; at most 100",
            ),
            (
                RequestError::InBatch {
                    index: 3,
                    error: Box::new(RequestError::UnknownLot("zz".to_owned())),
                },
                NotFound,
                "request 3 of the batch: lot \"zz\" is not known",
            ),
            (
                RequestError::InBatch {
                    index: 0,
                    error: Box::new(RequestError::MissingLot),
                },
                InvalidArgument,
                "request 0 of the batch: lot_id is empty",
            ),
            (
                RequestError::BadCoordinates {
                    latitude: 91.0,
                    longitude: 0.0,
                },
                InvalidArgument,
                "latitude 91 / longitude 0 are not WGS84",
            ),
            (
                RequestError::RadiusOutOfRange {
                    radius_m: 50_000.0,
                    max: 10_000,
                },
                InvalidArgument,
                "radius_m 50000 must be in (0, 10000]",
            ),
            (
                RequestError::TooManyResults {
                    asked: 1_000,
                    max: 100,
                },
                InvalidArgument,
                "max_results 1000 is over the limit of 100",
            ),
            (
                RequestError::UnknownSlotType(99),
                InvalidArgument,
                "slot_type 99",
            ),
            (
                RequestError::WatchSize { size: 0, max: 100 },
                InvalidArgument,
                "1 to 100 lots, got 0",
            ),
        ]
    }

    /// The table: every refusal, the code it answers with, and what its message says.
    fn table() -> Vec<(ServiceError, tonic::Code, Vec<&'static str>)> {
        use tonic::Code;
        let mut rows: Vec<(ServiceError, Code, Vec<&str>)> = request_errors()
            .into_iter()
            .map(|(error, code, says)| (ServiceError::Request(error), code, vec![says]))
            .collect();
        rows.extend([
            (
                ServiceError::NoModel,
                Code::Unavailable,
                vec!["no model is active yet; ask without horizons"],
            ),
            (
                ServiceError::NoModelForArrival,
                Code::Unavailable,
                vec!["no model is active yet; search without an arrival time"],
            ),
            (
                ServiceError::TooManyWatches { max: 1_000 },
                Code::ResourceExhausted,
                vec!["1000 watch streams are open"],
            ),
            (
                ServiceError::ActivationDisabled,
                Code::FailedPrecondition,
                vec!["no admin token configured"],
            ),
            (
                ServiceError::MissingToken,
                Code::Unauthenticated,
                vec!["needs `authorization: Bearer <token>`"],
            ),
            (
                ServiceError::WrongToken,
                Code::Unauthenticated,
                vec!["the bearer token is wrong"],
            ),
            (
                ServiceError::EmptyModelName,
                Code::InvalidArgument,
                vec!["name is empty"],
            ),
            (
                ServiceError::Task(cancelled_task()),
                Code::Internal,
                vec!["cancelled"],
            ),
        ]);
        for (error, fault, says) in activation_errors() {
            let code = match fault {
                ModelFault::BadName => Code::InvalidArgument,
                ModelFault::Missing => Code::NotFound,
                ModelFault::Damaged | ModelFault::Server => Code::Internal,
            };
            rows.push((
                ServiceError::Registry {
                    error: Box::new(error),
                    asked: "toy".to_owned(),
                    root: PathBuf::from(ROOT),
                },
                code,
                vec![says],
            ));
        }
        for (error, fault, says) in activation_errors() {
            let (code, says) = match fault {
                ModelFault::BadName => (Code::InvalidArgument, vec![says]),
                ModelFault::Missing => (Code::NotFound, vec![says]),
                ModelFault::Damaged => (
                    Code::FailedPrecondition,
                    vec!["refused, the active model keeps serving: ", says],
                ),
                ModelFault::Server => (
                    Code::Internal,
                    vec!["not activated, the active model keeps serving: ", says],
                ),
            };
            rows.push((
                ServiceError::Activation {
                    error: Box::new(error),
                    asked: "toy".to_owned(),
                    root: PathBuf::from(ROOT),
                },
                code,
                says,
            ));
        }
        rows
    }

    /// The activation metric counts a refusal as the status answers it: a version that is not
    /// there, a version at fault, or the server's own failure, which never counts as `corrupt`.
    #[test]
    fn the_activation_metric_agrees_with_the_status() {
        use crate::metrics::ActivationOutcome as Outcome;
        for (error, fault, _) in activation_errors() {
            let outcome = error.outcome();
            let agrees = match fault {
                ModelFault::BadName | ModelFault::Missing => outcome == Outcome::NotFound,
                ModelFault::Damaged => matches!(
                    outcome,
                    Outcome::Corrupt | Outcome::Schema | Outcome::Step | Outcome::Smoke
                ),
                ModelFault::Server => outcome == Outcome::ServerError,
            };
            assert!(agrees, "{error} ({fault:?}) counts as {outcome:?}");
        }
    }

    #[test]
    fn every_refusal_has_its_code_and_says_what_is_wrong() {
        for (error, code, says) in table() {
            let described = format!("{error:?}");
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{described}: {}", status.message());
            for part in says {
                assert!(
                    status.message().contains(part),
                    "{described}: {:?} should say {part:?}",
                    status.message()
                );
            }
            assert!(
                !status.message().contains(ROOT),
                "{described}: {:?} names the server's registry folder",
                status.message()
            );
        }
    }

    #[test]
    fn a_registry_io_error_is_internal_never_failed_precondition() {
        let unreadable = || {
            ActivationError::Registry(RegistryError::Io {
                path: in_registry("toy/2/manifest.json"),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            })
        };
        let activating = Status::from(ServiceError::Activation {
            error: Box::new(unreadable()),
            asked: "toy".to_owned(),
            root: PathBuf::from(ROOT),
        });
        let describing = Status::from(ServiceError::Registry {
            error: Box::new(unreadable()),
            asked: "toy".to_owned(),
            root: PathBuf::from(ROOT),
        });
        assert_eq!(activating.code(), tonic::Code::Internal);
        assert_eq!(describing.code(), tonic::Code::Internal);
    }

    #[test]
    fn long_names_are_quoted_in_part() {
        let long = "x".repeat(1_000);
        let status = Status::from(ServiceError::Activation {
            error: Box::new(ActivationError::Registry(RegistryError::BadName {
                name: long.clone(),
            })),
            asked: long,
            root: PathBuf::from(ROOT),
        });
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("… (1000 bytes)") && status.message().len() < 300,
            "{}",
            status.message()
        );
    }
}
