//! The package's integration tests, one module per file, linked into one test binary:
//! each file used to be a binary of its own, and every one of them linked the whole dependency
//! tree (Polars, Arrow, tonic, rdkafka), which cost CI minutes of linking and gigabytes of disk.
//! `cargo nextest` still runs every test in its own process.

mod common;

mod backtest;
mod features;
mod import;
mod prior;
mod simulate;
mod train;
mod validation_only;
mod warehouse;
