//! The one error of the crate.

use std::path::PathBuf;

use parkcast_kafka::KafkaConfigError;

/// Why a benchmark could not run or did not finish.
///
/// The option variants come first and are checked before anything runs; their messages name the
/// flags of `parkcast bench`, which the options mirror.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No request rate above 0 (`--rates`).
    #[error("--rates needs rates above 0 requests/s")]
    NoRates,
    /// No connection to spread the requests over (`--connections`).
    #[error("--connections must be at least 1")]
    NoConnections,
    /// h2load needs at least one connection and one stream per connection.
    #[error("--connections and --streams must be at least 1")]
    NoConnectionsOrStreams,
    /// The sweep's measured time per rate is not a positive number of seconds.
    #[error("--seconds must be a positive number, not {0}")]
    SweepSeconds(f64),
    /// h2load's measured time per rate is under its 0.1 s floor.
    #[error("--seconds must be 0.1 or more, not {0}")]
    H2loadSeconds(f64),
    /// The produce -> visible part's duration is not a positive number of seconds.
    #[error("--visibility-seconds must be positive, not {0}")]
    VisibilitySeconds(f64),
    /// No probe per second.
    #[error("--probes must be at least 1")]
    NoProbes,
    /// `--sweep-under-load` without a broker to load.
    #[error("--sweep-under-load needs the broker (--bootstrap) and --warehouse")]
    LoadNeedsBroker,
    /// The event clock's rate is out of range.
    #[error("--clock-rate must be from 1 to {max}, not {rate}")]
    ClockRate {
        /// The rate asked for.
        rate: u32,
        /// The fastest allowed.
        max: u32,
    },
    /// Neither lots nor a warehouse listing them.
    #[error("give --lots or --warehouse (the lots the server serves)")]
    NoLots,
    /// A lot asked for is not in the warehouse.
    #[error("lot {lot:?} is not in the warehouse at {}", warehouse.display())]
    UnknownLot {
        /// The lot asked for.
        lot: String,
        /// The warehouse that lacks it.
        warehouse: PathBuf,
    },
    /// The produce -> visible part needs the slot ids of a warehouse.
    #[error("the produce -> visible part (--bootstrap) needs --warehouse for the slot ids")]
    VisibilityNeedsWarehouse,
    /// The broker settings do not hold together.
    #[error("invalid Kafka settings")]
    Kafka(#[source] KafkaConfigError),
    /// The model line has no version to load.
    #[error("model {model} has no published version")]
    NoPublishedVersion {
        /// The model line.
        model: String,
    },
    /// None of the model's lots has readings in the warehouse to score from.
    #[error("no lot of the model has history in the warehouse")]
    NoLotHistory,
    /// The run failed part-way: the harness's context chain (see the crate documentation).
    #[error(transparent)]
    Run(#[from] anyhow::Error),
}
