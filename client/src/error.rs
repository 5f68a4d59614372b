//! What can go wrong between the arguments and a printed answer. A refusal keeps the server's
//! `tonic::Status` whole, so callers (and tests) can match on its code rather than on text.

use std::time::Duration;

/// An error of the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The address is not a URI.
    #[error("{address:?} is not a server address")]
    Address {
        /// The address as given.
        address: String,
        /// Why tonic refused it.
        #[source]
        source: tonic::transport::Error,
    },
    /// Nothing answered at the address.
    #[error("failed to connect to {address}")]
    Connect {
        /// The address as given.
        address: String,
        /// The transport's reason.
        #[source]
        source: tonic::transport::Error,
    },
    /// The server answered with an error status. Not a `#[source]`: the message already carries the
    /// code and the server's text, and the status's own text would repeat them.
    #[error("the server refused: {:?}: {}", .0.code(), .0.message())]
    Refused(Box<tonic::Status>),
    /// An arrival further ahead than a horizon in minutes can say (`u32`).
    #[error("{after:?} is too far ahead for a horizon")]
    ArrivalTooFar {
        /// The arrival, from now.
        after: Duration,
    },
    /// An availability request named no lot.
    #[error("no lot given")]
    NoLots,
    /// The admin token has characters gRPC metadata cannot carry.
    #[error("the token cannot be sent as gRPC metadata (only visible ASCII is allowed)")]
    Token(#[source] tonic::metadata::errors::InvalidMetadataValue),
    /// Waiting for the signal that ends a watch failed.
    #[error("failed to listen for Ctrl-C")]
    Stop(#[source] std::io::Error),
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        ClientError::Refused(Box::new(status))
    }
}
