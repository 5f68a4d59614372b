//! `parkcast ingest`: the live consumer on its own (sensor and session topics into live state),
//! with Prometheus metrics, until Ctrl-C or, with `--until-caught-up`, until it has read everything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use parkcast_serving::ingest::Ingest;
use parkcast_serving::metrics::{self, IngestMetrics};
use prometheus_client::registry::Registry;

use super::GlobalArgs;
use super::args::LiveArgs;
use crate::report;

/// Arguments of `parkcast ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub live: LiveArgs,
    /// Serve Prometheus metrics at `http://ADDRESS/metrics`.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    /// Stop (cleanly, with a checkpoint) once every owned partition is read to its end.
    #[arg(long)]
    pub until_caught_up: bool,
    /// On stop, write every owned lot's picture as JSON here (at the newest event time).
    #[arg(long)]
    pub dump_state: Option<PathBuf>,
}

pub fn run(args: IngestArgs, _global: &GlobalArgs) -> Result<()> {
    let (config, topology) = args.live.load_with(|_| {})?;
    let config = config.ingest;
    tracing::info!(
        lots = topology.lots().len(),
        slots = topology.slot_count(),
        bootstrap = %config.kafka.bootstrap_servers,
        group = %config.group_id,
        "starting ingestion"
    );
    let mut registry = Registry::default();
    let ingest_metrics = IngestMetrics::register(&mut registry);
    let registry = Arc::new(Mutex::new(registry));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let started = Instant::now();
    let (ingest, stats) = runtime.block_on(async {
        let (bound, _server) = metrics::serve(args.metrics_addr, Arc::clone(&registry))
            .await
            .with_context(|| format!("failed to serve metrics on {}", args.metrics_addr))?;
        tracing::info!(address = %bound, "metrics at http://{bound}/metrics");
        let config = config.clone();
        let ingest =
            tokio::task::spawn_blocking(move || Ingest::start(config, topology, ingest_metrics))
                .await
                .context("the start task failed")?
                .context("failed to start ingestion")?;
        ingest
            .watch(
                args.until_caught_up,
                parkcast_serving::server::shutdown_signal(),
            )
            .await;
        let snapshots = ingest.lot_snapshots(None);
        let handled = ingest.metrics().handled();
        Ok::<_, anyhow::Error>((ingest, (snapshots, handled)))
    })?;
    let (snapshots, handled) = stats;
    let summary = ingest.stop().context("ingestion stopped with an error")?;
    if let Some(path) = &args.dump_state {
        std::fs::write(path, serde_json::to_string_pretty(&snapshots)? + "\n")
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    let text = metrics::render(
        &registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let mut table = report::new_table(&["measure", "value"]);
    table.add_row(vec![
        "messages handled".to_owned(),
        report::thousands(handled),
    ]);
    table.add_row(vec![
        "dead letters delivered".to_owned(),
        report::thousands(summary.deadletters_delivered),
    ]);
    table.add_row(vec![
        "lots owned at stop".to_owned(),
        snapshots.len().to_string(),
    ]);
    table.add_row(vec!["occupied / free / unknown slots".to_owned(), {
        let (occupied, free, unknown) = snapshots.values().fold((0, 0, 0), |acc, lot| {
            (acc.0 + lot.occupied, acc.1 + lot.free, acc.2 + lot.unknown)
        });
        format!("{occupied} / {free} / {unknown}")
    }]);
    table.add_row(vec![
        "wall time".to_owned(),
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    ]);
    println!("{table}");
    let rejected: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("parkcast_ingest_rejected_total") && !line.ends_with(" 0"))
        .collect();
    if !rejected.is_empty() {
        println!("dead-lettered by reason:\n  {}", rejected.join("\n  "));
    }
    Ok(())
}
