//! `parkcast serve`: live ingestion plus the gRPC server (Availability, health, reflection) and
//! Prometheus metrics, until Ctrl-C or SIGTERM.
//!
//! First part of the serving issue: answers carry the live picture; forecasts, the pricing feed and
//! model reload are not built yet (see `serving::grpc`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use parkcast_proto::v1::availability_server::AvailabilityServer;
use parkcast_serving::grpc::AvailabilityService;
use parkcast_serving::ingest::Ingest;
use parkcast_serving::metrics::{self, IngestMetrics};
use parkcast_serving::requests::RequestLimits;
use prometheus_client::registry::Registry;

use super::GlobalArgs;
use super::stream::LiveArgs;

/// Arguments of `parkcast serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub live: LiveArgs,
    /// gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Prometheus metrics at `http://ADDRESS/metrics`.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
}

/// The gRPC service name health reports on.
const AVAILABILITY: &str = "parkcast.v1.Availability";

pub fn run(args: ServeArgs, _global: &GlobalArgs) -> Result<()> {
    let (config, topology) = args.live.load()?;
    let mut registry = Registry::default();
    let ingest_metrics = IngestMetrics::register(&mut registry);
    let registry = Arc::new(Mutex::new(registry));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let stale_after_ms = i64::try_from(config.stale_after_ms).unwrap_or(i64::MAX);
    let ingest = runtime.block_on(async {
        let (bound, _metrics) = metrics::serve(args.metrics_addr, Arc::clone(&registry))
            .await
            .with_context(|| format!("failed to serve metrics on {}", args.metrics_addr))?;
        tracing::info!(address = %bound, "metrics at http://{bound}/metrics");
        let ingest = Arc::new(
            tokio::task::spawn_blocking(move || Ingest::start(config, topology, ingest_metrics))
                .await
                .context("the start task failed")?
                .context("failed to start ingestion")?,
        );

        // Health: NOT_SERVING until ingestion has read everything it owns and the broker answers.
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(AVAILABILITY, tonic_health::ServingStatus::NotServing)
            .await;
        let watched = Arc::downgrade(&ingest);
        tokio::spawn(async move {
            let mut serving = false;
            loop {
                let Some(ingest) = watched.upgrade() else {
                    break;
                };
                let status = ingest.status();
                drop(ingest);
                let ready = status.assigned_partitions > 0 && status.lag == Some(0) && !status.stale;
                if ready != serving {
                    let health = if ready {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    reporter.set_service_status(AVAILABILITY, health).await;
                    tracing::info!(ready, "health changed");
                    serving = ready;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(parkcast_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("failed to build gRPC reflection")?;
        let service = AvailabilityService::new(
            Arc::clone(&ingest),
            RequestLimits::default(),
            stale_after_ms,
        );
        println!(
            "serving gRPC on {} (try: parkcast query --addr http://{} --lot <lot id>); Ctrl-C stops",
            args.grpc_addr, args.grpc_addr
        );
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(reflection)
            .add_service(AvailabilityServer::new(service))
            .serve_with_shutdown(args.grpc_addr, shutdown_signal())
            .await
            .with_context(|| format!("the gRPC server on {} failed", args.grpc_addr))?;
        Ok::<_, anyhow::Error>(ingest)
    })?;
    tracing::info!("gRPC stopped; checkpointing and leaving the group");
    let ingest = Arc::try_unwrap(ingest)
        .map_err(|_| anyhow::anyhow!("the live state is still shared after shutdown"))?;
    let summary = ingest.stop().context("ingestion stopped with an error")?;
    println!(
        "stopped: {} messages handled, {} dead letters delivered",
        summary.handled, summary.deadletters_delivered
    );
    Ok(())
}

/// Ctrl-C or SIGTERM (how service managers and Kubernetes stop a process).
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("stopping on Ctrl-C"),
        () = terminate => tracing::info!("stopping on SIGTERM"),
    }
}
