//! The warehouse: the star schema as hive-partitioned Parquet, written by parkcast and read lazily with
//! polars.
//!
//! Layout under the root:
//!
//! ```text
//! warehouse.json                                   format version (readers refuse a newer one)
//! <fact table>/date=YYYY-MM-DD/part-<writer>-<n>.parquet   partitioned by the UTC date of a timestamp
//! <dimension>/part-<writer>-0.parquet
//! ```
//!
//! Every file belongs to one *writer* (`sim`, `birmingham`, `malaga`, `melbourne`, `csv-<name>`, ...).
//! Writing a table for a writer first removes that writer's old files of the table, so re-running an
//! import or a simulation replaces its rows instead of duplicating them, and imports of different
//! sources live side by side. Files are written to `_tmp/` and renamed into place, so a reader never
//! sees a half-written file.
//!
//! Reads check every file's schema against the table's row type before polars sees it, so a wrong file
//! is named in the error instead of surfacing as an opaque failure mid-query.
//!
//! # Format versions
//!
//! | version | what changed |
//! | --- | --- |
//! | 1 | the star schema |
//! | 2 | `dim_calendar` gains `is_school_holiday`, `school_holiday_name`, `is_bridge_day`, `days_to_major_holiday`, `days_from_major_holiday`; `calendars/<writer>.csv` keeps the calendar file an import was given |
//! | 3 | `dim_lot` gains `hold_minutes`: how long a reading holds for a source that writes only changes (null: no fill) |
//!
//! A table may hold files of both versions (an old import beside a new one): a file that lacks a
//! column added after its version ([`crate::schema::ColumnSpec::added_in_format`]) reads it as
//! null. Writing marks the warehouse with this code's version, because older readers cannot scan
//! a table whose files differ in columns; they refuse it by its version instead of failing in polars.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, NaiveDate, Utc};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::rows::TableRow;
use crate::schema::{ColumnSpec, ColumnType, Table};

/// The warehouse format this code writes; readers accept this version and older ones.
pub const FORMAT_VERSION: u32 = 3;

const MANIFEST_FILE: &str = "warehouse.json";
const TMP_DIR: &str = "_tmp";
/// Rows per Parquet row group: large enough for good compression, small enough to prune by statistics.
const ROW_GROUP_SIZE: usize = 256 * 1024;
/// Stack of writer threads: what the main thread gets, since polars' writer recurses deeply.
const WRITER_STACK_BYTES: usize = 8 * 1024 * 1024;

/// Errors of the warehouse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WarehouseError {
    /// A file system operation failed.
    #[error("{context} ({path}): {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// polars failed.
    #[error("{context}: {source}")]
    Polars {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: PolarsError,
    },
    /// The folder has no `warehouse.json`.
    #[error(
        "{root} is not a parkcast warehouse (no {MANIFEST_FILE}); create one with `parkcast simulate` or `parkcast import`"
    )]
    NotAWarehouse {
        /// The folder.
        root: PathBuf,
    },
    /// `warehouse.json` could not be parsed.
    #[error("{path} is not a valid warehouse manifest: {source}")]
    BadManifest {
        /// The manifest.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The warehouse was written by a newer parkcast.
    #[error(
        "warehouse format version {found} is newer than this parkcast supports ({supported}); upgrade parkcast"
    )]
    UnsupportedVersion {
        /// The version found.
        found: u32,
        /// The newest version this code reads.
        supported: u32,
    },
    /// The table's folder does not exist.
    #[error("table {table} is missing from the warehouse at {root}")]
    MissingTable {
        /// The table.
        table: Table,
        /// The warehouse root.
        root: PathBuf,
    },
    /// A file lacks a column of its table.
    #[error(
        "{path}: table {table} needs column {column} ({column_type}), which the file does not have"
    )]
    MissingColumn {
        /// The table.
        table: Table,
        /// The column.
        column: &'static str,
        /// Its expected type.
        column_type: ColumnType,
        /// The file.
        path: PathBuf,
    },
    /// A column has the wrong type.
    #[error("{path}: column {table}.{column} should be {expected} but is {found}")]
    WrongColumnType {
        /// The table.
        table: Table,
        /// The column.
        column: &'static str,
        /// The expected logical type.
        expected: ColumnType,
        /// What the file holds, as polars names it.
        found: String,
        /// The file.
        path: PathBuf,
    },
    /// A non-nullable column holds nulls.
    #[error("column {table}.{column} must not be null but holds {nulls} null value(s)")]
    UnexpectedNull {
        /// The table.
        table: Table,
        /// The column.
        column: &'static str,
        /// How many nulls.
        nulls: usize,
    },
    /// A value cannot be represented in the row type.
    #[error("column {table}.{column} holds an out-of-range value: {value}")]
    OutOfRange {
        /// The table.
        table: Table,
        /// The column.
        column: &'static str,
        /// The offending value.
        value: String,
    },
    /// A frame handed to [`Warehouse::write_frame`] does not have the table's columns in order.
    #[error(
        "frame for {table} should have column {column} here with its schema type, found {found:?}"
    )]
    FrameMismatch {
        /// The table.
        table: Table,
        /// The expected column.
        column: &'static str,
        /// What the frame has at that position.
        found: Option<String>,
    },
    /// A writer name that would not make a safe file name.
    #[error("writer name {writer:?} must be non-empty ASCII letters, digits, '-' or '_'")]
    BadWriterName {
        /// The name given.
        writer: String,
    },
}

type Result<T> = std::result::Result<T, WarehouseError>;

fn io_error(context: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WarehouseError {
    let path = path.to_path_buf();
    move |source| WarehouseError::Io {
        context,
        path,
        source,
    }
}

fn polars_error(context: impl Into<String>) -> impl FnOnce(PolarsError) -> WarehouseError {
    let context = context.into();
    move |source| WarehouseError::Polars { context, source }
}

/// The polars data type of a logical column type.
pub fn polars_type(column_type: ColumnType) -> DataType {
    match column_type {
        ColumnType::Text => DataType::String,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Int32 => DataType::Int32,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::UInt64 => DataType::UInt64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Date => DataType::Date,
        ColumnType::Timestamp => DataType::Datetime(TimeUnit::Milliseconds, None),
    }
}

/// The polars schema of a table (without the hive `date` column).
pub fn polars_schema(table: Table) -> Schema {
    table
        .columns()
        .iter()
        .map(|column| Field::new(column.name.into(), polars_type(column.column_type)))
        .collect()
}

/// A Rust value stored in one polars column.
pub trait PolarsValue: Sized {
    /// Builds a column from values.
    fn to_column<'a>(name: &str, values: impl Iterator<Item = &'a Self>) -> Column
    where
        Self: 'a;
    /// Reads a column back; the caller has checked the column's type.
    fn from_column(table: Table, name: &'static str, column: &Column) -> Result<Vec<Self>>;
}

/// A row type that converts to and from a polars `DataFrame`.
pub trait FrameRow: TableRow {
    /// The rows as a frame with the table's columns in order.
    fn to_frame(rows: &[Self]) -> PolarsResult<DataFrame>;
    /// The rows of a frame that has (at least) the table's columns with their types.
    fn from_frame(frame: &DataFrame) -> Result<Vec<Self>>;
}

fn required<T>(table: Table, name: &'static str, values: Vec<Option<T>>) -> Result<Vec<T>> {
    let nulls = values.iter().filter(|value| value.is_none()).count();
    if nulls > 0 {
        return Err(WarehouseError::UnexpectedNull {
            table,
            column: name,
            nulls,
        });
    }
    Ok(values.into_iter().flatten().collect())
}

fn typed<'a, T>(table: Table, name: &'static str, result: PolarsResult<&'a T>) -> Result<&'a T> {
    result.map_err(polars_error(format!("reading column {table}.{name}")))
}

macro_rules! polars_primitive {
    ($($rust:ty => $chunked:ident, $accessor:ident);+ $(;)?) => {
        $(
            impl PolarsValue for $rust {
                fn to_column<'a>(name: &str, values: impl Iterator<Item = &'a Self>) -> Column {
                    $chunked::from_iter_values(name.into(), values.copied()).into_column()
                }
                fn from_column(table: Table, name: &'static str, column: &Column) -> Result<Vec<Self>> {
                    let chunked = typed(table, name, column.$accessor())?;
                    required(table, name, chunked.iter().collect())
                }
            }
            impl PolarsValue for Option<$rust> {
                fn to_column<'a>(name: &str, values: impl Iterator<Item = &'a Self>) -> Column {
                    $chunked::from_iter_options(name.into(), values.copied()).into_column()
                }
                fn from_column(table: Table, name: &'static str, column: &Column) -> Result<Vec<Self>> {
                    Ok(typed(table, name, column.$accessor())?.iter().collect())
                }
            }
        )+
    };
}

polars_primitive! {
    bool => BooleanChunked, bool;
    i32 => Int32Chunked, i32;
    i64 => Int64Chunked, i64;
    u64 => UInt64Chunked, u64;
    f64 => Float64Chunked, f64;
}

impl PolarsValue for String {
    fn to_column<'a>(name: &str, values: impl Iterator<Item = &'a Self>) -> Column {
        StringChunked::from_iter_values(name.into(), values.map(String::as_str)).into_column()
    }
    fn from_column(table: Table, name: &'static str, column: &Column) -> Result<Vec<Self>> {
        let chunked = typed(table, name, column.str())?;
        required(
            table,
            name,
            chunked
                .iter()
                .map(|value| value.map(str::to_owned))
                .collect(),
        )
    }
}

impl PolarsValue for Option<String> {
    fn to_column<'a>(name: &str, values: impl Iterator<Item = &'a Self>) -> Column {
        StringChunked::from_iter_options(name.into(), values.map(Option::as_deref)).into_column()
    }
    fn from_column(table: Table, name: &'static str, column: &Column) -> Result<Vec<Self>> {
        let chunked = typed(table, name, column.str())?;
        Ok(chunked
            .iter()
            .map(|value| value.map(str::to_owned))
            .collect())
    }
}

/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

fn date_to_days(date: &NaiveDate) -> i32 {
    use chrono::Datelike;
    date.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE
}

fn days_to_date(table: Table, name: &'static str, days: i32) -> Result<NaiveDate> {
    days.checked_add(UNIX_EPOCH_DAYS_FROM_CE)
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .ok_or_else(|| WarehouseError::OutOfRange {
            table,
            column: name,
            value: format!("{days} days"),
        })
}

fn millis_to_timestamp(table: Table, name: &'static str, millis: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(millis).ok_or_else(|| WarehouseError::OutOfRange {
        table,
        column: name,
        value: format!("{millis} ms"),
    })
}

impl PolarsValue for NaiveDate {
    fn to_column<'a>(name: &str, values: impl Iterator<Item = &'a Self>) -> Column {
        Int32Chunked::from_iter_values(name.into(), values.map(date_to_days))
            .into_date()
            .into_column()
    }
    fn from_column(table: Table, name: &'static str, column: &Column) -> Result<Vec<Self>> {
        let chunked = typed(table, name, column.date())?;
        required(table, name, chunked.physical().iter().collect())?
            .into_iter()
            .map(|days| days_to_date(table, name, days))
            .collect()
    }
}

impl PolarsValue for Option<NaiveDate> {
    fn to_column<'a>(name: &str, values: impl Iterator<Item = &'a Self>) -> Column {
        Int32Chunked::from_iter_options(
            name.into(),
            values.map(|value| value.as_ref().map(date_to_days)),
        )
        .into_date()
        .into_column()
    }
    fn from_column(table: Table, name: &'static str, column: &Column) -> Result<Vec<Self>> {
        let chunked = typed(table, name, column.date())?;
        chunked
            .physical()
            .iter()
            .map(|days| days.map(|days| days_to_date(table, name, days)).transpose())
            .collect()
    }
}

impl PolarsValue for DateTime<Utc> {
    fn to_column<'a>(name: &str, values: impl Iterator<Item = &'a Self>) -> Column {
        Int64Chunked::from_iter_values(name.into(), values.map(DateTime::timestamp_millis))
            .into_datetime(TimeUnit::Milliseconds, None)
            .into_column()
    }
    fn from_column(table: Table, name: &'static str, column: &Column) -> Result<Vec<Self>> {
        let chunked = typed(table, name, column.datetime())?;
        required(table, name, chunked.physical().iter().collect())?
            .into_iter()
            .map(|millis| millis_to_timestamp(table, name, millis))
            .collect()
    }
}

impl PolarsValue for Option<DateTime<Utc>> {
    fn to_column<'a>(name: &str, values: impl Iterator<Item = &'a Self>) -> Column {
        Int64Chunked::from_iter_options(
            name.into(),
            values.map(|value| value.as_ref().map(DateTime::timestamp_millis)),
        )
        .into_datetime(TimeUnit::Milliseconds, None)
        .into_column()
    }
    fn from_column(table: Table, name: &'static str, column: &Column) -> Result<Vec<Self>> {
        let chunked = typed(table, name, column.datetime())?;
        chunked
            .physical()
            .iter()
            .map(|millis| {
                millis
                    .map(|millis| millis_to_timestamp(table, name, millis))
                    .transpose()
            })
            .collect()
    }
}

/// `warehouse.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    /// Format version of the layout.
    format_version: u32,
    /// How fact tables are partitioned.
    partitioning: String,
}

/// What one table holds on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSummary {
    /// The table.
    pub table: Table,
    /// Parquet files.
    pub files: usize,
    /// Rows, from the files' footers.
    pub rows: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// First and last partition date, for fact tables with data.
    pub date_range: Option<(NaiveDate, NaiveDate)>,
}

/// What one write produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Files written.
    pub files: usize,
    /// Rows written.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
}

impl WriteStats {
    /// Adds another write's figures.
    pub fn add(&mut self, other: &WriteStats) {
        self.files += other.files;
        self.rows += other.rows;
        self.bytes += other.bytes;
    }
}

/// Fact rows grouped by the date of their hive partition, dates in order.
///
/// # Panics
/// On rows of a dimension table (they have no partition date).
pub fn by_partition_date<R: TableRow>(rows: &[R]) -> BTreeMap<NaiveDate, Vec<R>> {
    let mut by_date: BTreeMap<NaiveDate, Vec<R>> = BTreeMap::new();
    for row in rows {
        let date = row
            .partition_date()
            .expect("fact rows should have a partition date");
        by_date.entry(date).or_default().push(row.clone());
    }
    by_date
}

/// A star-schema warehouse on the local file system.
#[derive(Debug, Clone)]
pub struct Warehouse {
    root: PathBuf,
}

impl Warehouse {
    /// Opens the warehouse at `root` for writing, creating the folder and its manifest if they do not
    /// exist, and marking an older warehouse with [`FORMAT_VERSION`] (its files stay as they are;
    /// see "Format versions" above).
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io_error("creating the warehouse folder", &root))?;
        let manifest_path = root.join(MANIFEST_FILE);
        let manifest = if manifest_path.exists() {
            let manifest = read_manifest(&manifest_path)?;
            if manifest.format_version == FORMAT_VERSION {
                return Ok(Warehouse { root });
            }
            Manifest {
                format_version: FORMAT_VERSION,
                ..manifest
            }
        } else {
            Manifest {
                format_version: FORMAT_VERSION,
                partitioning: "hive:date(utc)".to_owned(),
            }
        };
        let text = serde_json::to_string_pretty(&manifest).expect("the manifest should serialize");
        fs::write(&manifest_path, text + "\n")
            .map_err(io_error("writing the warehouse manifest", &manifest_path))?;
        Ok(Warehouse { root })
    }

    /// Opens an existing warehouse.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let manifest_path = root.join(MANIFEST_FILE);
        if !manifest_path.is_file() {
            return Err(WarehouseError::NotAWarehouse { root });
        }
        read_manifest(&manifest_path)?;
        Ok(Warehouse { root })
    }

    /// The format version in the warehouse's manifest.
    pub fn format_version(&self) -> Result<u32> {
        Ok(read_manifest(&self.root.join(MANIFEST_FILE))?.format_version)
    }

    /// The warehouse folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of a table.
    pub fn table_dir(&self, table: Table) -> PathBuf {
        self.root.join(table.name())
    }

    /// Removes every file the writer wrote for the table (all partitions), so it can write afresh.
    pub fn clear_writer(&self, table: Table, writer: &str) -> Result<usize> {
        check_writer_name(writer)?;
        if !self.has_table(table) {
            // A fresh warehouse: nothing to clear, and `replace` must work on it.
            return Ok(0);
        }
        let prefix = format!("part-{writer}-");
        let mut removed = 0;
        for path in self.table_files(table)? {
            let is_writers = path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(&prefix));
            if is_writers {
                fs::remove_file(&path)
                    .map_err(io_error("removing an old warehouse file", &path))?;
                removed += 1;
                if let Some(parent) = path
                    .parent()
                    .filter(|parent| *parent != self.table_dir(table))
                {
                    // An emptied partition folder would make polars see a partition without files.
                    let _ = fs::remove_dir(parent);
                }
            }
        }
        Ok(removed)
    }

    /// Replaces the writer's rows of a table with `rows`: clears the writer's old files, then writes one
    /// file per partition date (facts) or one file (dimensions).
    pub fn replace<R: FrameRow>(&self, writer: &str, rows: &[R]) -> Result<WriteStats> {
        self.clear_writer(R::TABLE, writer)?;
        if R::PARTITION_COLUMN.is_none() {
            return self.write_file(writer, None, 0, rows);
        }
        let partitions: Vec<(NaiveDate, Vec<R>)> = by_partition_date(rows).into_iter().collect();
        let stats = self.write_partitions(writer, &partitions)?;
        if stats.files == 0 {
            fs::create_dir_all(self.table_dir(R::TABLE)).map_err(io_error(
                "creating a table folder",
                &self.table_dir(R::TABLE),
            ))?;
        }
        Ok(stats)
    }

    /// Writes partitions in parallel: a long import has thousands of them, each an independent file.
    ///
    /// Plain scoped threads, not rayon: polars runs its own rayon pool, and a rayon worker of another
    /// pool that waits on it steals more of our writes meanwhile, nesting one write per partition on
    /// its stack until it overflows (seen with Málaga's 1,545 partitions).
    fn write_partitions<R: FrameRow>(
        &self,
        writer: &str,
        partitions: &[(NaiveDate, Vec<R>)],
    ) -> Result<WriteStats> {
        let workers = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, partitions.len().max(1));
        let next = AtomicUsize::new(0);
        let write_some = || -> Result<WriteStats> {
            let mut stats = WriteStats::default();
            while let Some((date, rows)) = partitions.get(next.fetch_add(1, Ordering::Relaxed)) {
                stats.add(&self.write_file(writer, Some(*date), 0, rows)?);
            }
            Ok(stats)
        };
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    std::thread::Builder::new()
                        .name("warehouse-writer".to_owned())
                        .stack_size(WRITER_STACK_BYTES)
                        .spawn_scoped(scope, write_some)
                        .map_err(io_error("starting a writer thread", &self.root))
                })
                .collect::<Result<_>>()?;
            let mut stats = WriteStats::default();
            for handle in handles {
                stats.add(
                    &handle
                        .join()
                        .expect("a warehouse writer thread should not panic")?,
                );
            }
            Ok(stats)
        })
    }

    /// Writes one file of a table: `part-<writer>-<part>.parquet` in the partition of `date` (facts) or
    /// in the table folder (dimensions, `date` = `None`). Rows of a fact table must all belong to `date`.
    /// The file is written under `_tmp/` and renamed into place, replacing a file of the same name.
    pub fn write_file<R: FrameRow>(
        &self,
        writer: &str,
        date: Option<NaiveDate>,
        part: u32,
        rows: &[R],
    ) -> Result<WriteStats> {
        let table = R::TABLE;
        debug_assert!(rows.iter().all(|row| row.partition_date() == date));
        let mut frame =
            R::to_frame(rows).map_err(polars_error(format!("building a frame for {table}")))?;
        self.write_frame(table, writer, date, part, &mut frame)
    }

    /// Writes a frame built by a bulk producer (the simulator's sensor stream) as one file, like
    /// [`Warehouse::write_file`]. The frame must have exactly the table's columns and types, in order;
    /// for fact tables every row must fall in the partition of `date`.
    pub fn write_frame(
        &self,
        table: Table,
        writer: &str,
        date: Option<NaiveDate>,
        part: u32,
        frame: &mut DataFrame,
    ) -> Result<WriteStats> {
        check_writer_name(writer)?;
        let expected = polars_schema(table);
        for (index, column) in table.columns().iter().enumerate() {
            let found = frame.columns().get(index);
            let matches = found.is_some_and(|found| {
                found.name().as_str() == column.name
                    && found.dtype()
                        == expected
                            .get(column.name)
                            .expect("the schema should have every column")
            });
            if !matches {
                return Err(WarehouseError::FrameMismatch {
                    table,
                    column: column.name,
                    found: found.map(|found| format!("{}: {}", found.name(), found.dtype())),
                });
            }
        }
        let dir = match (table.partition_column(), date) {
            (Some(_), Some(date)) => self
                .table_dir(table)
                .join(format!("date={}", date.format("%Y-%m-%d"))),
            (None, _) => self.table_dir(table),
            (Some(_), None) => {
                panic!("a fact table file should be written with its partition date")
            }
        };
        fs::create_dir_all(&dir).map_err(io_error("creating a table folder", &dir))?;
        let tmp_dir = self.root.join(TMP_DIR);
        fs::create_dir_all(&tmp_dir)
            .map_err(io_error("creating the temporary folder", &tmp_dir))?;

        let file_name = format!("part-{writer}-{part}.parquet");
        // Unique per final path, so partitions can be written in parallel.
        let partition = date.map_or_else(
            || "dim".to_owned(),
            |date| date.format("%Y-%m-%d").to_string(),
        );
        let tmp_path = tmp_dir.join(format!("{}.{partition}.{file_name}", table.name()));
        let final_path = dir.join(&file_name);
        let rows = frame.height() as u64;
        // Atomic and durable (parkcast-durable): readers list table folders, so the half-written
        // file lives in the warehouse's temporary folder until it is renamed into place.
        let bytes = parkcast_durable::replace_file_via(&tmp_path, &final_path, |file| {
            ParquetWriter::new(file)
                .with_compression(ParquetCompression::Zstd(None))
                .with_statistics(StatisticsOptions::full())
                .with_row_group_size(Some(ROW_GROUP_SIZE))
                .finish(frame)
        })
        .map_err(|error| match error {
            parkcast_durable::ReplaceError::Write(source) => WarehouseError::Polars {
                context: format!("writing {}", final_path.display()),
                source,
            },
            parkcast_durable::ReplaceError::Io { step, path, source } => WarehouseError::Io {
                context: step,
                path,
                source,
            },
        })?;
        Ok(WriteStats {
            files: 1,
            rows,
            bytes,
        })
    }

    /// The Parquet files of a table, sorted by path. Errors if the table folder is missing.
    pub fn table_files(&self, table: Table) -> Result<Vec<PathBuf>> {
        let dir = self.table_dir(table);
        if !dir.is_dir() {
            return Err(WarehouseError::MissingTable {
                table,
                root: self.root.clone(),
            });
        }
        let mut files = Vec::new();
        collect_parquet_files(&dir, &mut files)?;
        files.sort();
        Ok(files)
    }

    /// Whether the table exists in this warehouse.
    pub fn has_table(&self, table: Table) -> bool {
        self.table_dir(table).is_dir()
    }

    /// Checks one file's columns and types against the table. A file may lack the columns added
    /// after the first format (it was written before them); any other missing column is an error.
    pub fn check_file_schema(&self, table: Table, path: &Path) -> Result<()> {
        self.columns_missing_from(table, path).map(|_| ())
    }

    /// Checks a file like [`Warehouse::check_file_schema`] and names the later-added columns it
    /// lacks.
    fn columns_missing_from(&self, table: Table, path: &Path) -> Result<Vec<&'static str>> {
        let file = File::open(path).map_err(io_error("opening a Parquet file", path))?;
        let arrow_schema = ParquetReader::new(file)
            .schema()
            .map_err(polars_error(format!(
                "reading the schema of {}",
                path.display()
            )))?;
        let mut missing = Vec::new();
        for column in table.columns() {
            let Some(field) = arrow_schema.get(column.name) else {
                if column.added_in_format > 1 {
                    missing.push(column.name);
                    continue;
                }
                return Err(missing_column(table, column, path));
            };
            let found = DataType::from_arrow_field(field);
            if found != polars_type(column.column_type) {
                return Err(WarehouseError::WrongColumnType {
                    table,
                    column: column.name,
                    expected: column.column_type,
                    found: found.to_string(),
                    path: path.to_path_buf(),
                });
            }
        }
        Ok(missing)
    }

    /// A lazy scan of a table after checking every file's schema. Fact tables get the hive partition
    /// column `date` (a `Date`) besides their own columns, so filters on it prune whole files.
    /// Columns a file lacks because it was written before they were added read as null.
    pub fn scan(&self, table: Table) -> Result<LazyFrame> {
        let files = self.table_files(table)?;
        let mut some_file_lacks_columns = false;
        for path in &files {
            some_file_lacks_columns |= !self.columns_missing_from(table, path)?.is_empty();
        }
        if files.is_empty() {
            let mut schema = polars_schema(table);
            if table.is_fact() {
                schema.with_column("date".into(), DataType::Date);
            }
            return Ok(DataFrame::empty_with_schema(&schema).lazy());
        }
        let paths: Vec<PlRefPath> = files
            .iter()
            .map(|path| PlRefPath::new(path.to_string_lossy().into_owned()))
            .collect();
        let hive_options = HiveOptions {
            enabled: Some(table.is_fact()),
            hive_start_idx: 0,
            schema: None,
            try_parse_dates: true,
        };
        // With files of different formats, the table's own schema (not the first file's) is the
        // scan's, and polars fills the columns a file lacks with nulls.
        let args = ScanArgsParquet {
            hive_options,
            schema: some_file_lacks_columns.then(|| Arc::new(polars_schema(table))),
            allow_missing_columns: some_file_lacks_columns,
            ..ScanArgsParquet::default()
        };
        let sources = ScanSources::Paths(paths.into_iter().collect());
        LazyFrame::scan_parquet_sources(sources, args)
            .map_err(polars_error(format!("scanning {table}")))
    }

    /// Reads a whole table into typed rows (in file order). Meant for dimensions and tests; scan facts
    /// lazily instead.
    pub fn read_rows<R: FrameRow>(&self) -> Result<Vec<R>> {
        let frame = self
            .scan(R::TABLE)?
            .collect()
            .map_err(polars_error(format!("reading {}", R::TABLE)))?;
        R::from_frame(&frame)
    }

    /// Files, rows, bytes and date range of every table present.
    pub fn summary(&self) -> Result<Vec<TableSummary>> {
        let mut summaries = Vec::new();
        for table in Table::ALL {
            if !self.has_table(table) {
                continue;
            }
            let files = self.table_files(table)?;
            let mut summary = TableSummary {
                table,
                files: files.len(),
                rows: 0,
                bytes: 0,
                date_range: None,
            };
            for path in &files {
                let metadata =
                    fs::metadata(path).map_err(io_error("reading file metadata", path))?;
                summary.bytes += metadata.len();
                let file = File::open(path).map_err(io_error("opening a Parquet file", path))?;
                let rows = ParquetReader::new(file)
                    .num_rows()
                    .map_err(polars_error(format!(
                        "reading the footer of {}",
                        path.display()
                    )))?;
                summary.rows += rows as u64;
                if let Some(date) = partition_date_of(path) {
                    summary.date_range = Some(match summary.date_range {
                        None => (date, date),
                        Some((first, last)) => (first.min(date), last.max(date)),
                    });
                }
            }
            summaries.push(summary);
        }
        Ok(summaries)
    }
}

/// Reads a manifest and refuses a newer format.
fn read_manifest(manifest_path: &Path) -> Result<Manifest> {
    let text = fs::read_to_string(manifest_path)
        .map_err(io_error("reading the warehouse manifest", manifest_path))?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|source| WarehouseError::BadManifest {
            path: manifest_path.to_path_buf(),
            source,
        })?;
    if manifest.format_version > FORMAT_VERSION {
        return Err(WarehouseError::UnsupportedVersion {
            found: manifest.format_version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(manifest)
}

fn missing_column(table: Table, column: &ColumnSpec, path: &Path) -> WarehouseError {
    WarehouseError::MissingColumn {
        table,
        column: column.name,
        column_type: column.column_type,
        path: path.to_path_buf(),
    }
}

fn check_writer_name(writer: &str) -> Result<()> {
    let valid = !writer.is_empty()
        && writer
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(WarehouseError::BadWriterName {
            writer: writer.to_owned(),
        })
    }
}

/// The date of a hive partition file: `.../date=YYYY-MM-DD/file.parquet`.
pub fn partition_date_of(path: &Path) -> Option<NaiveDate> {
    let folder = path.parent()?.file_name()?.to_str()?;
    let date = folder.strip_prefix("date=")?;
    NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()
}

fn collect_parquet_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(io_error("listing a table folder", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_error("listing a table folder", dir))?;
        let path = entry.path();
        let file_type = entry
            .file_type()
            .map_err(io_error("reading a file type", &path))?;
        if file_type.is_dir() {
            collect_parquet_files(&path, files)?;
        } else if path
            .extension()
            .is_some_and(|extension| extension == "parquet")
        {
            files.push(path);
        }
    }
    Ok(())
}
