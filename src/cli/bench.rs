//! `parkcast bench`: the speed and memory figures the issues ask for, as a table.
//!
//! Benchmarks run the real code paths on real inputs (the simulator at a chosen scale, the whole
//! real data sets) into a temporary warehouse. Peak memory is the process's high-water mark
//! (`VmHWM`), so run one benchmark per process for a clean figure.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use comfy_table::{Cell, CellAlignment};
use parkcast_training::import;
use parkcast_training::progress::NoProgress;
use parkcast_training::simulate::{self, SimulationParams};

use super::import::SourceArgs;
use crate::report;

/// Arguments of `parkcast bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub target: BenchTarget,
}

/// What to measure.
#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// Simulate a city into a temporary warehouse (issue target: 50 lots x 90 days under 60 s).
    Simulate {
        /// Lots.
        #[arg(long, default_value_t = 50)]
        lots: u32,
        /// Days.
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
    /// Import each whole real data set into a temporary warehouse.
    Import,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let scratch = tempfile::tempdir().context("failed to create a scratch folder")?;
    let warehouse = super::create_warehouse(&scratch.path().join("warehouse"))?;
    let mut table = report::new_table(&[
        "benchmark",
        "wall time",
        "rows written",
        "rows/s",
        "peak RSS",
    ]);
    match args.target {
        BenchTarget::Simulate { lots, days } => {
            let params = SimulationParams::default()
                .lots(lots)
                .days(days)
                .check()
                .context("invalid parameters")?;
            let started = Instant::now();
            let outcome = simulate::simulate(&params, &warehouse, &NoProgress)
                .context("simulation failed")?;
            let rows = outcome.written.iter().map(|(_, stats)| stats.rows).sum();
            add_row(
                &mut table,
                &format!("simulate {lots} lots x {days} days"),
                started,
                rows,
            );
        }
        BenchTarget::Import => {
            for source in SourceArgs::All.sources() {
                let name = source.writer_name();
                let started = Instant::now();
                let outcome = import::import(&source, &warehouse, &NoProgress)
                    .with_context(|| format!("failed to import {name}"))?;
                let rows = outcome.written.iter().map(|(_, stats)| stats.rows).sum();
                add_row(
                    &mut table,
                    &format!(
                        "import {name} ({} rows read)",
                        report::thousands(outcome.rows_read)
                    ),
                    started,
                    rows,
                );
            }
        }
    }
    println!("{table}");
    println!(
        "peak RSS is the process high-water mark so far; machine: {} logical cores",
        num_cores()
    );
    Ok(())
}

fn add_row(table: &mut comfy_table::Table, name: &str, started: Instant, rows: u64) {
    let seconds = started.elapsed().as_secs_f64();
    let right = |text: String| Cell::new(text).set_alignment(CellAlignment::Right);
    table.add_row(vec![
        Cell::new(name),
        right(format!("{seconds:.2} s")),
        right(report::thousands(rows)),
        right(report::thousands((rows as f64 / seconds.max(1e-9)) as u64)),
        right(peak_rss_kib().map_or_else(|| "n/a".to_owned(), |kib| report::bytes(kib * 1024))),
    ]);
}

/// The process's peak resident set size in KiB, from `/proc/self/status` (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
