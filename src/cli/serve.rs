//! `parkcast serve`: live ingestion, scoring with the active model, the gRPC services
//! (Availability, Models, health, reflection), the pricing feed and Prometheus metrics, until
//! Ctrl-C or SIGTERM.
//!
//! The server itself, its start-up and shutdown order, is [`parkcast_serving::server`]; this
//! module layers the flags onto the config and waits for a signal.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use parkcast_serving::config::{ClockMode, ServiceConfig};
use parkcast_serving::server::{Server, ServerOptions, shutdown_signal};

use super::GlobalArgs;
use super::args::LiveArgs;

/// Arguments of `parkcast serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub live: LiveArgs,
    /// gRPC address (overrides `serve.grpc_addr`).
    #[arg(long)]
    pub grpc_addr: Option<SocketAddr>,
    /// The HTTP port: Prometheus metrics at `http://ADDRESS/metrics` and the REST/JSON API at
    /// `http://ADDRESS/v1/...` (described at `/openapi.json`; overrides `serve.metrics_addr`).
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Model registry folder (overrides `serve.registry`).
    #[arg(long, env = "PARKCAST_MODELS")]
    pub registry: Option<PathBuf>,
    /// Model line to serve (overrides `serve.model`).
    #[arg(long)]
    pub model: Option<String>,
    /// Its version to start with, 0 for the newest (overrides `serve.model_version`).
    #[arg(long)]
    pub model_version: Option<u32>,
    /// Bearer token of `ActivateModel` (overrides `serve.admin_token`).
    #[arg(long, env = "PARKCAST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Answer at the wall clock, or at the newest event time of the stream (replays of the past).
    #[arg(long, value_enum)]
    pub clock: Option<ClockMode>,
    /// Read grid history from the warehouse up to this instant (RFC 3339; default: now).
    #[arg(long)]
    pub history_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Run as one of several replicas of the consumer group: advertise the lots this one owns on
    /// the replicas topic and forward requests for the others' lots to their owners (sets
    /// `replicas.enabled`).
    #[arg(long)]
    pub replicas: bool,
    /// `host:port` the other replicas reach this one's gRPC port at (overrides
    /// `replicas.advertise_addr`; default: the bound gRPC address).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise_addr: Option<String>,
    /// This replica's id in the group (overrides `replicas.replica_id`; default: its advertised
    /// address).
    #[arg(long)]
    pub replica_id: Option<String>,
}

impl ServeArgs {
    /// The serve flags: the last layer of the config, before it is validated.
    fn apply(&self, config: &mut ServiceConfig) {
        let serve = &mut config.serve;
        if let Some(address) = self.grpc_addr {
            serve.grpc_addr = address;
        }
        if let Some(address) = self.metrics_addr {
            serve.metrics_addr = address;
        }
        if let Some(registry) = &self.registry {
            serve.registry.clone_from(registry);
        }
        if let Some(model) = &self.model {
            serve.model.clone_from(model);
        }
        if let Some(version) = self.model_version {
            serve.model_version = version;
        }
        if let Some(token) = &self.admin_token {
            serve.admin_token.clone_from(token);
        }
        if let Some(clock) = self.clock {
            serve.clock = clock;
        }
        let replicas = &mut config.replicas;
        replicas.enabled |= self.replicas;
        if let Some(address) = &self.advertise_addr {
            replicas.advertise_addr.clone_from(address);
        }
        if let Some(id) = &self.replica_id {
            replicas.replica_id.clone_from(id);
        }
    }
}

pub fn run(args: ServeArgs, _global: &GlobalArgs) -> Result<()> {
    let (config, topology) = args.live.load_with(|config| args.apply(config))?;
    let warehouse = args.live.warehouse.open()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let summary = runtime.block_on(async {
        let server = Server::start(ServerOptions {
            config,
            topology,
            warehouse,
            history_until_ms: args.history_until.map(|at| at.timestamp_millis()),
        })
        .await?;
        println!(
            "serving gRPC on {} (try: parkcast query --addr http://{} --lot <lot id> --horizons 30,60); metrics on http://{}/metrics; REST/JSON on http://{}/v1 (OpenAPI: /openapi.json); Ctrl-C stops",
            server.grpc_addr, server.grpc_addr, server.metrics_addr, server.metrics_addr
        );
        server.run_until(shutdown_signal()).await
    })?;
    println!(
        "stopped: {} messages handled, {} dead letters delivered",
        summary.handled, summary.deadletters_delivered
    );
    Ok(())
}
