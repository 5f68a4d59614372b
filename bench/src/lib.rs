//! The load generators and measurements behind `parkcast bench`: the speed and memory figures the
//! issues ask for, each returned as a [`Report`] (tables and lines) for the caller to print.
//!
//! Benchmarks run the real code paths on real inputs (the simulator at a chosen scale, the whole
//! real data sets, a real broker, a running server) rather than toy stand-ins, because the figures
//! are quoted against the issues' targets. There is one entry point per target, each taking plain
//! options (the CLI converts its flags; this crate knows nothing of clap):
//!
//! - [`simulate`], [`import`], [`train`] ([`batch`]): the offline paths into a scratch warehouse;
//! - [`ingest`] ([`mod@ingest`]): decode + validate + apply in process, one core;
//! - [`ingest_kafka`], [`melbourne`] ([`stream`]): through a broker, and the Melbourne day
//!   replayed and archived;
//! - [`scoring`] ([`mod@scoring`]): direct scoring vs interpolating the ready forecast;
//! - [`grpc`] ([`mod@grpc`]), [`h2load`] ([`mod@h2load`]): a running server's answer latency and
//!   produce -> visible delay.
//!
//! Progress goes to `tracing`; the figures are in the returned report only, so a script that
//! parses stdout sees the tables and nothing else.
//!
//! # Errors
//!
//! Each entry point checks its options before doing anything and says what is wrong with a
//! specific [`Error`] variant; messages name the command-line flags, because the options mirror
//! them one for one. A failure while measuring (a broker, a server, a warehouse that misbehaves)
//! is [`Error::Run`]: the harness's `anyhow` context chain, unchanged. The harness is leaf code
//! that nobody recovers from; a typed variant per failing broker call would add nothing a reader
//! of the message needs.
//!
//! # Example
//!
//! ```
//! use parkcast_bench::{IngestOptions, ingest};
//!
//! let report = ingest(&IngestOptions { lots: 2, slots: 10, events: 200 })?;
//! assert!(report.to_string().contains("events/s on one core"));
//! # Ok::<(), parkcast_bench::Error>(())
//! ```
//!
//! # Layout
//!
//! Imports run one way: [`table`], [`measure`], [`synthetic`] and `client` import nothing of this
//! crate but [`Error`] and [`Report`]; `sweep` and `visibility` build on them; [`mod@grpc`] and
//! [`mod@h2load`] on those; the other targets on the shared modules only.

pub mod batch;
mod client;
mod error;
pub mod etl;
pub mod grpc;
pub mod h2load;
pub mod ingest;
pub mod measure;
mod report;
pub mod scoring;
pub mod stream;
mod sweep;
pub mod synthetic;
pub mod table;
mod visibility;

pub use batch::{SimulateOptions, TrainOptions, import, simulate, train};
pub use error::Error;
pub use etl::{EtlOptions, etl};
pub use grpc::{GrpcOptions, grpc};
pub use h2load::{H2loadOptions, h2load};
pub use ingest::{IngestOptions, ingest};
pub use report::Report;
pub use scoring::{ScoringOptions, scoring};
pub use stream::{IngestKafkaOptions, MelbourneOptions, MelbourneReport, ingest_kafka, melbourne};
