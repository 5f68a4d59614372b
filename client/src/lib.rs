//! The client of parkcast's gRPC services (`parkcast.v1.Availability`, `parkcast.v1.Models`), as
//! `parkcast query` and `parkcast models activate` use it. It lives apart from the CLI so that the
//! binary is glue (arguments in, one call, print) and so that what a person or a script reads is
//! defined, and tested, in one place.
//!
//! The modules follow the data: [`request`] turns plain arguments into request messages (pure),
//! [`rpc`] makes the calls over a caller's [`tonic::transport::Channel`] and returns the rendered
//! answer, [`json`] and [`text`] render answers (pure: proto messages in, `serde_json::Value` or
//! `String` out), [`error`] says what went wrong with a variant per cause.
//!
//! ```
//! use parkcast_client::{json, text};
//! use parkcast_proto::v1::LotAvailability;
//!
//! let lot = LotAvailability {
//!     lot_id: "BHM-001".to_owned(),
//!     capacity: 40,
//!     occupied_now: 31,
//!     free_now: 9,
//!     ..LotAvailability::default()
//! };
//! assert!(text::watch_line(&lot).contains("BHM-001  free 9/40 (occupied 31, unknown 0)"));
//! assert_eq!(json::availability_json(&lot)["free_now"], 9);
//! ```

pub mod error;
pub mod json;
pub mod request;
pub mod rpc;
pub mod text;

#[cfg(test)]
mod fixtures;

pub use error::ClientError;
pub use request::{
    Ahead, Arrival, SearchQuery, activation_request, clear_shadow_request, shadow_request,
};
pub use rpc::{
    Output, activate_model, availability, clear_shadow, connect, describe_model, list_models,
    list_replicas, live_quality, search, shadow_model, watch,
};
