//! `parkcast reconcile`: the operational store's slips (loaded by `parkcast etl`) joined with the
//! sensor archive's stays, and the exceptions listed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use comfy_table::Cell;
use parkcast_etl::reconcile::{self, Reconciliation, StayException};
use parkcast_tables::{cents, new_table, right, thousands};

use super::args::WarehouseLocation;

/// Arguments of `parkcast reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The warehouse holding the sensor archive's stays and the ETL's payments.
    #[command(flatten)]
    pub location: WarehouseLocation,
    /// The `source` to reconcile (the name `parkcast etl --source` loaded the payments under).
    #[arg(long, default_value = "simulated")]
    pub source: String,
    /// Longest stay expected, days: a stay's slips are looked for this long after its entry, and
    /// stays this close to either end of the archive are left out.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=30))]
    pub max_stay_days: u32,
    /// Folder for the exception lists (CSV) and `summary.json`; default
    /// `<warehouse>/reports/reconciliation`.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: ReconcileArgs) -> Result<()> {
    let warehouse = args.location.open()?;
    let out = args.out.unwrap_or_else(|| {
        args.location
            .warehouse
            .join("reports")
            .join("reconciliation")
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // The join itself, a row per stay, streamed as the walk goes.
    let stays_path = out.join("stays.csv");
    let mut stays = csv::Writer::from_path(&stays_path)
        .with_context(|| format!("creating {}", stays_path.display()))?;
    stays.write_record([
        "session_id",
        "lot_id",
        "entry_ts",
        "exit_ts",
        "charging",
        "payments",
        "paid_cents",
        "refunded_cents",
        "tariff_id",
        "paid_until",
        "penalty_cents",
    ])?;
    let time = |ts: Option<chrono::DateTime<chrono::Utc>>| {
        ts.map(|ts| ts.to_rfc3339()).unwrap_or_default()
    };
    let report =
        reconcile::reconcile_with(&warehouse, &args.source, args.max_stay_days, &mut |stay| {
            stays
                .write_record([
                    stay.session_id,
                    stay.lot_id,
                    stay.entry_ts.to_rfc3339(),
                    time(stay.exit_ts),
                    stay.charging.to_string(),
                    stay.payments.to_string(),
                    stay.paid_cents.to_string(),
                    stay.refunded_cents.to_string(),
                    stay.tariff_id.unwrap_or_default(),
                    time(stay.paid_until),
                    stay.penalty_cents.to_string(),
                ])
                .map_err(|error| parkcast_etl::EtlError::Io {
                    context: "writing",
                    path: stays_path.clone(),
                    source: std::io::Error::other(error),
                })
        })
        .context("the reconciliation failed")?;
    stays
        .flush()
        .with_context(|| format!("writing {}", stays_path.display()))?;
    write_lists(&report, &out)?;
    print_summary(&report);
    println!(
        "the joined stays (stays.csv) and the exception lists: {}",
        out.display()
    );
    Ok(())
}

pub(super) fn print_summary(report: &Reconciliation) {
    let total = |items: &mut dyn Iterator<Item = i64>| items.sum::<i64>();
    let fined = report
        .overstays
        .iter()
        .filter(|overstay| overstay.penalty_cents > 0)
        .count() as u64;
    let mut table = new_table(&["", "count", "amount"]);
    let rows: Vec<(String, Option<u64>, Option<i64>)> = vec![
        (
            "finished stays at lots that charge".to_owned(),
            Some(report.stays),
            None,
        ),
        (
            "  paid (settled or pending; amount net of refunds)".to_owned(),
            Some(report.paid_stays),
            Some(report.paid_cents),
        ),
        (
            "  payments still pending".to_owned(),
            Some(report.pending_payments),
            None,
        ),
        ("  refunded".to_owned(), None, Some(report.refunded_cents)),
        (
            "stays without payment (est. at the lot's mean)".to_owned(),
            Some(report.unpaid.len() as u64),
            Some(total(&mut report.unpaid.iter().map(|stay| stay.cents))),
        ),
        (
            "stays whose payment failed".to_owned(),
            Some(report.failed.len() as u64),
            Some(total(&mut report.failed.iter().map(|stay| stay.cents))),
        ),
        (
            "payments without a stay".to_owned(),
            Some(report.orphans.len() as u64),
            Some(total(
                &mut report.orphans.iter().map(|payment| payment.cents),
            )),
        ),
        (
            format!("overstays ({fined} fined; amount: fines)"),
            Some(report.overstays.len() as u64),
            Some(total(
                &mut report
                    .overstays
                    .iter()
                    .map(|overstay| overstay.penalty_cents),
            )),
        ),
    ];
    for (label, count, amount) in rows {
        table.add_row(vec![
            Cell::new(label),
            right(count.map(thousands).unwrap_or_default()),
            right(amount.map(cents).unwrap_or_default()),
        ]);
    }
    println!(
        "{} stays entered {} .. {} (UTC dates)",
        report.source, report.period.0, report.period.1
    );
    println!("{table}");
}

fn write_lists(report: &Reconciliation, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let stays = |stays: &[StayException]| -> Vec<Vec<String>> {
        stays
            .iter()
            .map(|stay| {
                vec![
                    stay.session_id.clone(),
                    stay.lot_id.clone(),
                    stay.entry_ts.to_rfc3339(),
                    stay.exit_ts.to_rfc3339(),
                    stay.cents.to_string(),
                ]
            })
            .collect()
    };
    let stay_header =
        |amount: &'static str| ["session_id", "lot_id", "entry_ts", "exit_ts", amount];
    write_csv(
        &out.join("unpaid_stays.csv"),
        &stay_header("estimated_cents"),
        stays(&report.unpaid),
    )?;
    write_csv(
        &out.join("failed_payments.csv"),
        &stay_header("cents"),
        stays(&report.failed),
    )?;
    write_csv(
        &out.join("orphan_payments.csv"),
        &["slip_id", "session_id", "lot_id", "paid_ts", "cents"],
        report
            .orphans
            .iter()
            .map(|payment| {
                vec![
                    payment.slip_id.clone(),
                    payment.session_id.clone(),
                    payment.lot_id.clone(),
                    payment.paid_ts.to_rfc3339(),
                    payment.cents.to_string(),
                ]
            })
            .collect(),
    )?;
    write_csv(
        &out.join("overstays.csv"),
        &["session_id", "lot_id", "minutes", "penalty_cents"],
        report
            .overstays
            .iter()
            .map(|overstay| {
                vec![
                    overstay.session_id.clone(),
                    overstay.lot_id.clone(),
                    overstay.minutes.to_string(),
                    overstay.penalty_cents.to_string(),
                ]
            })
            .collect(),
    )?;
    let summary = serde_json::json!({
        "source": report.source,
        "from": report.period.0,
        "until": report.period.1,
        "stays": report.stays,
        "paid_stays": report.paid_stays,
        "paid_cents": report.paid_cents,
        "refunded_cents": report.refunded_cents,
        "pending_payments": report.pending_payments,
        "unpaid_stays": report.unpaid.len(),
        "failed_payments": report.failed.len(),
        "orphan_payments": report.orphans.len(),
        "overstays": report.overstays.len(),
    });
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_vec_pretty(&summary).expect("a summary serialises"),
    )
    .with_context(|| format!("writing {}", out.join("summary.json").display()))?;
    Ok(())
}

/// One exception list: a header, then a row per exception.
fn write_csv(path: &Path, header: &[&str], rows: Vec<Vec<String>>) -> Result<()> {
    let mut writer =
        csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    writer.write_record(header)?;
    for row in rows {
        writer.write_record(row)?;
    }
    writer
        .flush()
        .with_context(|| format!("writing {}", path.display()))
}
