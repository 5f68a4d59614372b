//! Readable summaries printed at the end of long commands, in the house style of
//! [`parkcast_tables`].

use parkcast_archive::archiver::ArchiveSummary;
use parkcast_tables::{Cell, Table as TextTable, right};
pub use parkcast_tables::{bytes, new_table, thousands};
use parkcast_training::import::ImportReport;
use parkcast_training::simulate::SimulationReport;
use parkcast_warehouse::schema::Table;
use parkcast_warehouse::{TableSummary, WriteStats};

fn number(value: u64) -> Cell {
    right(thousands(value))
}

/// What a simulation built.
pub fn simulation_table(report: &SimulationReport) -> TextTable {
    let mut table = new_table(&["simulated city", "value"]);
    let stats = &report.stats;
    let rows: [(&str, u64); 14] = [
        ("lots", report.lots as u64),
        ("slots", report.slots as u64),
        ("days", u64::from(report.days)),
        ("customers", report.customers as u64),
        ("vehicles", report.vehicles as u64),
        ("special events", report.events as u64),
        ("stays", report.sessions),
        ("drivers turned away (full)", stats.turned_away),
        ("street overstays", stats.overstays),
        ("sensor outages", stats.outages),
        ("readings lost in outages", stats.lost_in_outage),
        ("stuck-sensor episodes", stats.stuck_episodes),
        ("late readings", stats.late_readings),
        ("duplicate readings", stats.duplicate_readings),
    ];
    for (name, value) in rows {
        table.add_row(vec![Cell::new(name), number(value)]);
    }
    table.add_row(vec![
        Cell::new("elapsed"),
        right(format!("{:.1} s", report.elapsed.as_secs_f64())),
    ]);
    table
}

/// Files, rows and bytes written per table.
pub fn written_table(written: &[(Table, WriteStats)]) -> TextTable {
    let mut table = new_table(&["table", "files", "rows", "size"]);
    for (name, stats) in written {
        table.add_row(vec![
            Cell::new(name.name()),
            number(stats.files as u64),
            number(stats.rows),
            right(bytes(stats.bytes)),
        ]);
    }
    table
}

/// What the simulated backend wrote to the operational store.
pub fn backend_table(counts: &parkcast_opsim::BackendCounts) -> TextTable {
    let mut table = new_table(&["operational store", "rows"]);
    for (name, rows) in [
        ("customers", counts.customers),
        ("vehicles", counts.vehicles),
        ("tariffs (plan x price period)", counts.tariffs),
        ("payments", counts.payments),
        ("  settled or failed days later", counts.late_updates),
        ("refunds (days later)", counts.refunds),
        ("penalties", counts.penalties),
        ("  paid or cancelled later", counts.penalty_updates),
        ("injected: stays without payment", counts.injected_unpaid),
        ("injected: payments without a stay", counts.injected_orphans),
    ] {
        table.add_row(vec![Cell::new(name), number(rows)]);
    }
    table
}

/// What one ETL run loaded.
pub fn etl_table(report: &parkcast_etl::EtlReport) -> TextTable {
    let mut table = new_table(&["table", "rows extracted", "files rewritten"]);
    for load in &report.tables {
        table.add_row(vec![
            Cell::new(load.table.name()),
            number(load.rows),
            number(load.files),
        ]);
    }
    table
}

/// What a warehouse holds.
pub fn warehouse_table(summary: &[TableSummary]) -> TextTable {
    let mut table = new_table(&["table", "files", "rows", "size", "first date", "last date"]);
    for entry in summary {
        let (first, last) = entry
            .date_range
            .map_or((String::new(), String::new()), |(first, last)| {
                (first.to_string(), last.to_string())
            });
        table.add_row(vec![
            Cell::new(entry.table.name()),
            number(entry.files as u64),
            number(entry.rows),
            right(bytes(entry.bytes)),
            Cell::new(first),
            Cell::new(last),
        ]);
    }
    table
}

/// An import's cleaning rules and counts.
pub fn import_table(report: &ImportReport) -> TextTable {
    let mut table = new_table(&[&format!("import: {}", report.source), "rows", "rule"]);
    table.add_row(vec![
        Cell::new("rows read"),
        number(report.rows_read),
        Cell::new(""),
    ]);
    for rule in &report.rules {
        table.add_row(vec![
            Cell::new(rule.rule),
            number(rule.count),
            Cell::new(rule.description),
        ]);
    }
    table.add_row(vec![
        Cell::new("lots"),
        number(report.lots as u64),
        Cell::new(""),
    ]);
    if let (Some(first), Some(last)) = (report.first_ts, report.last_ts) {
        table.add_row(vec![
            Cell::new("time range (UTC)"),
            Cell::new(""),
            Cell::new(format!("{first} .. {last}")),
        ]);
    }
    table
}

/// The archive's figures.
pub fn archive_table(summary: &ArchiveSummary) -> TextTable {
    let totals = &summary.totals;
    let mut table = new_table(&["archive", "value"]);
    let rows = [
        ("messages read (this run)", summary.messages_this_run),
        ("messages read (all runs)", totals.messages),
        ("fact_slot_status rows", totals.rows[0]),
        ("fact_parking_session rows", totals.rows[1]),
        ("fact_customer_scan rows", totals.rows[2]),
        ("fact_payment rows", totals.rows[3]),
        ("fact_lot_occupancy rows", totals.rows[4]),
        ("files written", totals.files),
        ("invalid messages skipped", totals.invalid),
        ("exits without their entry", totals.orphan_exits),
        ("readings too late for the roll-up", totals.late_for_rollup),
        ("stays still open", summary.open_stays as u64),
        (
            "files of an interrupted flush removed",
            summary.removed_uncommitted_files as u64,
        ),
    ];
    for (name, value) in rows {
        table.add_row(vec![name.to_owned(), thousands(value)]);
    }
    table
}

/// An import's cleaning report, what it wrote, and how its readings cover the grid: the
/// warning of a source that looks like it writes only changes, or what `--fill-forward` covers.
pub fn import_summary(report: &ImportReport) -> String {
    let mut text = format!(
        "{}\n{}",
        import_table(report),
        written_table(&report.written)
    );
    if let Some(coverage) = &report.coverage {
        if let Some(warning) = coverage.warning() {
            text.push_str(&format!("\nwarning: {warning}"));
        }
        if let Some(summary) = coverage.fill_summary() {
            text.push_str(&format!("\n{summary}"));
        }
    }
    text
}
