//! The ETL from the operational store into the warehouse (`parkcast etl`).
//!
//! The operator's backend keeps customers, vehicles, tariffs, payments, refunds and penalties in
//! Postgres ([`parkcast_opstore`]); reports and models want them in the warehouse, beside the sensor
//! facts. Each run loads what changed since the previous one:
//!
//! - **What changed: a window of transactions.** Every row carries the id of the transaction that
//!   last wrote it (`row_xid`, kept by a trigger). A run opens one read-only repeatable-read
//!   transaction, takes the oldest transaction still running when it looks (`pg_snapshot_xmin`),
//!   and extracts the rows with `row_xid` in `[previous bound, this bound)`. Every transaction in
//!   that window has finished, and every later write gets a larger id, so the window is complete
//!   and never changes: a transaction that commits late (opened before a run, committed after) is
//!   in the next window, never skipped. A sequence-number watermark cannot promise that: a row
//!   numbered before the watermark can become visible after it. Measured cost: one index range scan
//!   per table. The bound is the cluster's: a long-open writing transaction in any database of the
//!   Postgres server holds it back (the report says for how long), delaying rows, never losing them.
//! - **Loaded into:** `dim_customer`, `dim_vehicle` (keyed hashes only: contact data and plates
//!   never leave the database), `dim_tariff` (band folded in), and `fact_payment` (payments and
//!   penalties, one slip each, with status, refunded amount and the stay paid for). A refund
//!   amends its payment: the payment is extracted again with the refunds summed, whether or not the
//!   backend touched the payment row.
//! - **Exactly once across crashes.** The ETL writes its own files (writer `etl`): one per dimension,
//!   one per `fact_payment` partition date. A window's rows are merged into them by key (a newer
//!   version replaces the row) and each file is replaced atomically ([`parkcast_durable`]); the
//!   checkpoint (`etl/checkpoint.json`: the bound reached, the source database's id) is replaced
//!   last. A run killed anywhere leaves the old checkpoint, so the next run extracts the same
//!   window again (and more), and merging by key makes the repeat harmless: no row twice, none
//!   missing, the files equal an uninterrupted run's. This is the archiver's discipline (output
//!   idempotent, progress recorded after it), with keys in place of offsets.
//! - **One ETL per warehouse** (a lock file), and a warehouse continues only from the database it
//!   was loaded from (`etl_source`): transaction ids of another cluster mean nothing here.
//!
//! Deletes are not seen by a window; the schema refuses them (migration 2).
//!
//! [`reconcile`] then joins the loaded slips with the sensor archive's stays and lists the
//! exceptions (stays without payment, payments without a stay, overstays).

mod extract;
mod merge;
pub mod reconcile;

use std::fs::{self, File};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parkcast_warehouse::progress::Progress;
use parkcast_warehouse::rows::{CustomerRow, PaymentRow, TariffRow, VehicleRow};
use parkcast_warehouse::schema::Table;
use parkcast_warehouse::{Warehouse, WarehouseError};
use postgres::{IsolationLevel, fallible_iterator::FallibleIterator};
use serde::{Deserialize, Serialize};

/// The writer name of the ETL's warehouse files.
pub const WRITER: &str = "etl";
/// The ETL's folder in the warehouse (checkpoint and lock).
pub const ETL_DIR: &str = "etl";
const CHECKPOINT_FILE: &str = "checkpoint.json";
const LOCK_FILE: &str = "lock";

/// What went wrong in a run. The warehouse is consistent after any of them (see the crate docs).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtlError {
    /// The database refused or dropped a query.
    #[error("postgres: {0}")]
    Postgres(#[from] postgres::Error),
    /// Reading or writing the warehouse failed.
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    /// The schema is not the one this parkcast ships.
    #[error(
        "the operational store is at schema version {found}, this parkcast expects {expected}: run `parkcast opstore migrate` (or upgrade parkcast if the database is newer)"
    )]
    SchemaVersion {
        /// The database's version.
        found: i64,
        /// This binary's.
        expected: i64,
    },
    /// The operational store's schema could not be read.
    #[error(transparent)]
    OpStore(#[from] parkcast_opstore::OpStoreError),
    /// Another ETL holds the warehouse.
    #[error("another `parkcast etl` is loading {0} (its lock is held); wait for it to finish")]
    Busy(PathBuf),
    /// The warehouse was loaded from another database.
    #[error(
        "this warehouse was loaded from another operational store (source {checkpoint}, this database is {database}); load into a new warehouse, or remove {path} to reload it from scratch"
    )]
    OtherSource {
        /// The source in the checkpoint.
        checkpoint: String,
        /// This database's.
        database: String,
        /// The checkpoint file.
        path: PathBuf,
    },
    /// The checkpoint or lock file could not be used.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// There is nothing to reconcile, and why.
    #[error("{0}")]
    NothingToReconcile(String),
    /// The checkpoint file is not what this ETL writes.
    #[error("the checkpoint {path} is unreadable ({source}); remove it to reload from scratch")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// How far the warehouse has loaded, replaced after every successful run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The source database's `etl_source.source_id`.
    pub source_id: String,
    /// Every transaction below this id is loaded.
    pub xmin: u64,
    /// Runs completed.
    pub runs: u64,
    /// When the last run finished.
    pub loaded_at: DateTime<Utc>,
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct EtlOptions {
    /// `source` of the rows written (the city the warehouse's sensor facts call themselves, so
    /// that joins and reports find both sides under one name).
    pub source: String,
}

/// What one table received in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableLoad {
    /// The warehouse table.
    pub table: Table,
    /// Rows extracted (new or changed since the previous run).
    pub rows: u64,
    /// Files rewritten.
    pub files: u64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct EtlReport {
    /// The window's start: the previous run's bound (0 on a first load).
    pub from_xmin: u64,
    /// The window's end, now the checkpoint.
    pub to_xmin: u64,
    /// Per warehouse table.
    pub tables: Vec<TableLoad>,
    /// Wall time.
    pub elapsed: Duration,
    /// How long the oldest transaction still writing to the database had been open: it holds the
    /// window's end back, so its rows and any committed after it wait for a later run.
    pub held_back_by: Option<Duration>,
}

impl EtlReport {
    /// Rows extracted over all tables.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|table| table.rows).sum()
    }
}

/// The ETL's checkpoint of a warehouse, if it has one.
pub fn checkpoint(warehouse: &Warehouse) -> Result<Option<Checkpoint>, EtlError> {
    let path = warehouse.root().join(ETL_DIR).join(CHECKPOINT_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| EtlError::Checkpoint { path, source }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(EtlError::Io {
            context: "reading the checkpoint",
            path,
            source,
        }),
    }
}

/// Loads what changed in the operational store since the warehouse's checkpoint (everything, on a
/// first run) into the warehouse, then moves the checkpoint.
pub fn run(
    client: &mut postgres::Client,
    warehouse: &Warehouse,
    options: &EtlOptions,
    progress: &dyn Progress,
) -> Result<EtlReport, EtlError> {
    let started = Instant::now();
    let dir = warehouse.root().join(ETL_DIR);
    fs::create_dir_all(&dir).map_err(|source| EtlError::Io {
        context: "creating",
        path: dir.clone(),
        source,
    })?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = File::create(&lock_path).map_err(|source| EtlError::Io {
        context: "creating the lock file",
        path: lock_path.clone(),
        source,
    })?;
    // Held until `lock` is dropped at the end of the run (or the process dies).
    lock.try_lock().map_err(|error| match error {
        fs::TryLockError::WouldBlock => EtlError::Busy(warehouse.root().to_path_buf()),
        fs::TryLockError::Error(source) => EtlError::Io {
            context: "locking",
            path: lock_path.clone(),
            source,
        },
    })?;

    let expected = parkcast_opstore::MIGRATIONS
        .last()
        .map_or(0, |migration| migration.version);
    let found = parkcast_opstore::schema_version(client)?;
    if found != expected {
        return Err(EtlError::SchemaVersion { found, expected });
    }
    let previous = checkpoint(warehouse)?;

    let mut transaction = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    // The first query fixes the snapshot every later query of the run sees.
    let row = transaction.query_one(
        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, (SELECT source_id FROM etl_source),
                (SELECT extract(epoch FROM max(now() - xact_start))::float8
                   FROM pg_stat_activity WHERE backend_xid IS NOT NULL)",
        &[],
    )?;
    let to_xmin: u64 = row
        .get::<_, String>(0)
        .parse()
        .expect("pg_snapshot_xmin should be a number");
    let source_id: String = row.get(1);
    let held_back_by = row
        .get::<_, Option<f64>>(2)
        .map(|seconds| Duration::from_secs_f64(seconds.max(0.0)));
    let from_xmin = match &previous {
        Some(checkpoint) if checkpoint.source_id != source_id => {
            return Err(EtlError::OtherSource {
                checkpoint: checkpoint.source_id.clone(),
                database: source_id,
                path: dir.join(CHECKPOINT_FILE),
            });
        }
        Some(checkpoint) => checkpoint.xmin,
        None => 0,
    };
    let window = extract::Window::new(from_xmin, to_xmin);
    tracing::info!(from_xmin, to_xmin, "extracting a window of transactions");

    let mut tables = Vec::new();
    progress.stage("loading dimensions", Some(3));
    tables.push(load_dimension::<CustomerRow>(
        &mut transaction,
        warehouse,
        &window,
        options,
        extract::CUSTOMERS,
        extract::customer,
        |row| row.customer_id.clone(),
    )?);
    progress.advance(1);
    tables.push(load_dimension::<VehicleRow>(
        &mut transaction,
        warehouse,
        &window,
        options,
        extract::VEHICLES,
        extract::vehicle,
        |row| row.vehicle_id.clone(),
    )?);
    progress.advance(1);
    tables.push(load_dimension::<TariffRow>(
        &mut transaction,
        warehouse,
        &window,
        options,
        extract::TARIFFS,
        extract::tariff,
        |row| row.tariff_id.clone(),
    )?);
    progress.advance(1);
    tables.push(load_payments(
        &mut transaction,
        warehouse,
        &window,
        options,
        progress,
    )?);
    transaction.commit()?;

    let runs = previous.as_ref().map_or(0, |checkpoint| checkpoint.runs) + 1;
    let next = Checkpoint {
        source_id,
        xmin: to_xmin,
        runs,
        loaded_at: Utc::now(),
    };
    let path = dir.join(CHECKPOINT_FILE);
    let json = serde_json::to_vec_pretty(&next).expect("a checkpoint should serialise");
    parkcast_durable::replace_file(&path, &json).map_err(|source| EtlError::Io {
        context: "writing the checkpoint",
        path,
        source,
    })?;
    drop(lock);
    Ok(EtlReport {
        from_xmin,
        to_xmin,
        tables,
        elapsed: started.elapsed(),
        held_back_by,
    })
}

/// Extracts a dimension's window and merges it into the ETL's file of that dimension.
fn load_dimension<R: parkcast_warehouse::FrameRow>(
    transaction: &mut postgres::Transaction<'_>,
    warehouse: &Warehouse,
    window: &extract::Window,
    options: &EtlOptions,
    query: &str,
    convert: fn(&postgres::Row, &str) -> R,
    key: fn(&R) -> String,
) -> Result<TableLoad, EtlError> {
    let changed: Vec<R> = transaction
        .query(query, &window.params())?
        .iter()
        .map(|row| convert(row, &options.source))
        .collect();
    let mut load = TableLoad {
        table: R::TABLE,
        rows: changed.len() as u64,
        files: 0,
    };
    if changed.is_empty() {
        return Ok(load);
    }
    let existing = warehouse
        .read_file::<R>(WRITER, None, 0)?
        .unwrap_or_default();
    let rows = merge::by_key(existing, changed, key);
    warehouse.write_file(WRITER, None, 0, &rows)?;
    load.files = 1;
    Ok(load)
}

/// Streams the window's payments and penalties in paid order and merges each partition date's
/// slips into the ETL's file of that date: memory holds one day, whatever the window's size.
fn load_payments(
    transaction: &mut postgres::Transaction<'_>,
    warehouse: &Warehouse,
    window: &extract::Window,
    options: &EtlOptions,
    progress: &dyn Progress,
) -> Result<TableLoad, EtlError> {
    let total: i64 = transaction
        .query_one(extract::SLIP_COUNT, &window.params())?
        .get(0);
    progress.stage("loading payments", Some(total.max(0) as u64));
    let mut load = TableLoad {
        table: Table::FactPayment,
        rows: 0,
        files: 0,
    };
    let mut day: Vec<PaymentRow> = Vec::new();
    let mut files = 0;
    let mut rows = transaction.query_raw(&extract::slips(), window.params())?;
    let mut flush = |day: &mut Vec<PaymentRow>| -> Result<(), EtlError> {
        let Some(date) = day.first().map(|slip| slip.paid_ts.date_naive()) else {
            return Ok(());
        };
        let changed = std::mem::take(day);
        let count = changed.len() as u64;
        let existing = warehouse
            .read_file::<PaymentRow>(WRITER, Some(date), 0)?
            .unwrap_or_default();
        let mut merged = merge::by_key(existing, changed, slip_key);
        merged.sort_by(|a, b| (a.paid_ts, &a.slip_id).cmp(&(b.paid_ts, &b.slip_id)));
        warehouse.write_file(WRITER, Some(date), 0, &merged)?;
        files += 1;
        progress.advance(count);
        Ok(())
    };
    while let Some(row) = rows.next()? {
        let slip = extract::slip(&row, &options.source);
        load.rows += 1;
        if day
            .first()
            .is_some_and(|first| first.paid_ts.date_naive() != slip.paid_ts.date_naive())
        {
            flush(&mut day)?;
        }
        day.push(slip);
    }
    flush(&mut day)?;
    load.files = files;
    Ok(load)
}

fn slip_key(row: &PaymentRow) -> String {
    row.slip_id.clone()
}
