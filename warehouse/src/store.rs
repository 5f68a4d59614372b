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
//! | 4 | `fact_payment` gains `status`, `refunded_cents`, `paid_from`, `paid_until` (what the operational store knows of a slip); new table `dim_tariff` (`parkcast etl`) |
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

use chrono::NaiveDate;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, WarehouseError, io_error, polars_error};
use crate::frame::{FrameRow, polars_type};
use crate::schema::{ColumnSpec, FORMAT_VERSION, MANIFEST_FILE, Table, TableRow};

const TMP_DIR: &str = "_tmp";
/// Rows per Parquet row group: large enough for good compression, small enough to prune by statistics.
const ROW_GROUP_SIZE: usize = 256 * 1024;
/// Stack of writer threads: what the main thread gets, since polars' writer recurses deeply.
const WRITER_STACK_BYTES: usize = 8 * 1024 * 1024;

/// The polars schema of a table (without the hive `date` column).
pub fn polars_schema(table: Table) -> Schema {
    table
        .columns()
        .iter()
        .map(|column| Field::new(column.name.into(), polars_type(column.column_type)))
        .collect()
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
        let final_path = self.file_path(table, writer, date, part);
        let dir = final_path
            .parent()
            .expect("a table file should be in a folder");
        fs::create_dir_all(dir).map_err(io_error("creating a table folder", dir))?;
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

    /// Where [`Warehouse::write_file`] puts the writer's file `part` of a table: in the partition of
    /// `date` for facts, in the table folder for dimensions.
    ///
    /// # Panics
    /// For a fact table without a date: its files live in partitions.
    pub fn file_path(
        &self,
        table: Table,
        writer: &str,
        date: Option<NaiveDate>,
        part: u32,
    ) -> PathBuf {
        let file_name = format!("part-{writer}-{part}.parquet");
        match (table.partition_column(), date) {
            (Some(_), Some(date)) => self
                .table_dir(table)
                .join(format!("date={}", date.format("%Y-%m-%d")))
                .join(file_name),
            (None, _) => self.table_dir(table).join(file_name),
            (Some(_), None) => {
                panic!("a fact table file should be written with its partition date")
            }
        }
    }

    /// The rows of one file [`Warehouse::write_file`] wrote, or `None` when there is no such file:
    /// what a writer that amends its own rows (the ETL) reads back before it rewrites the file.
    pub fn read_file<R: FrameRow>(
        &self,
        writer: &str,
        date: Option<NaiveDate>,
        part: u32,
    ) -> Result<Option<Vec<R>>> {
        let path = self.file_path(R::TABLE, writer, date, part);
        if !path.is_file() {
            return Ok(None);
        }
        let frame = self
            .scan_files(R::TABLE, std::slice::from_ref(&path))?
            .collect()
            .map_err(polars_error(format!("reading {}", path.display())))?;
        R::from_frame(&frame).map(Some)
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
        self.scan_files(table, &self.table_files(table)?)
    }

    /// A lazy scan of some of a table's files (from [`Warehouse::table_files`], in that order),
    /// like [`Warehouse::scan`]: a reader that walks a large table a few partitions at a time.
    pub fn scan_files(&self, table: Table, files: &[PathBuf]) -> Result<LazyFrame> {
        let mut some_file_lacks_columns = false;
        for path in files {
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
