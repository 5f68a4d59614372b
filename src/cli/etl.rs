//! `parkcast etl`: load what changed in the operational store (Postgres) into a warehouse.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use parkcast_etl::EtlOptions;

use super::GlobalArgs;
use crate::progress::BarProgress;
use crate::report;

/// Arguments of `parkcast etl`.
#[derive(Debug, Args)]
pub struct EtlArgs {
    /// Postgres connection string of the operational store (`host=... port=... user=...
    /// dbname=...`, or a `postgresql://` URL).
    #[arg(long, env = "PARKCAST_POSTGRES_DSN", hide_env_values = true)]
    pub postgres: String,
    /// Warehouse folder to load into (created if missing).
    #[arg(long, env = "PARKCAST_WAREHOUSE", default_value = "out/warehouse")]
    pub warehouse: PathBuf,
    /// `source` of the rows loaded: the name the warehouse's sensor facts of the same city carry
    /// (`simulated` for `parkcast simulate`), so joins and reports see both under one name.
    #[arg(long, default_value = "simulated")]
    pub source: String,
}

pub fn run(args: EtlArgs, global: &GlobalArgs) -> Result<()> {
    let warehouse = super::args::create_warehouse(&args.warehouse)?;
    let mut client = postgres::Client::connect(&args.postgres, postgres::NoTls)
        .context("could not connect to the operational store (--postgres)")?;
    let options = EtlOptions {
        source: args.source,
    };
    let report = BarProgress::run(global.quiet, |progress| {
        parkcast_etl::run(&mut client, &warehouse, &options, progress)
    })
    .context("the ETL run failed; the warehouse is as the last complete run left it, and the next run resumes from there")?;
    println!("{}", report::etl_table(&report));
    let seconds = report.elapsed.as_secs_f64().max(1e-9);
    println!(
        "window: transactions {} .. {} ({} rows in {:.1} s, {:.0} rows/s)",
        report.from_xmin,
        report.to_xmin,
        report.rows(),
        seconds,
        report.rows() as f64 / seconds
    );
    if let Some(open) = report.held_back_by.filter(|open| open.as_secs() >= 60) {
        println!(
            "note: a transaction open for {} holds the window back; what it and later transactions write waits for a later run",
            humantime::format_duration(std::time::Duration::from_secs(open.as_secs()))
        );
    }
    Ok(())
}
