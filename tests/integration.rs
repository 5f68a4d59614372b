//! The package's integration tests, one module per file, linked into one test binary:
//! each file used to be a binary of its own, and every one of them linked the whole dependency
//! tree (Polars, Arrow, tonic, rdkafka), which cost CI minutes of linking and gigabytes of disk.
//! `cargo nextest` still runs every test in its own process.

mod common;

mod cli_bench_grpc;
mod cli_csv_city;
mod cli_demo;
mod cli_etl;
mod cli_faults;
mod cli_fill_forward;
mod cli_import;
mod cli_opstore;
mod cli_protocol;
mod cli_query;
mod cli_retrain;
mod cli_serve;
mod cli_shards;
mod cli_stream;
mod cli_tune;
mod grpc_multiplexed;
mod live_quality;
mod ops_browser;
mod replicas;
mod retrain_live;
