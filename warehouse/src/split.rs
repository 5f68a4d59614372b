//! A source's occupancy and sessions split by lot group into scratch Parquet files, so that every
//! later read of a group reads only that group's rows.
//!
//! The warehouse is partitioned by date only: a scan filtered on a group's lot ids still decodes
//! the `lot_id` column of every file it touches. A trainer that reads a city group by group in
//! several passes (usability, training rows of each fit, scoring, the model file, the live
//! forecasts) paid for the whole session table per group and pass; on a simulated city of 200 lots
//! x 1 year that was about 1 GB of decoded ids per group read, and the groups' reads were most of
//! the run's peak memory. [`LotSplit::write`] reads each table once, a few partitions at a time
//! ([`FactChunks`]), and appends each chunk's rows to its groups' files; its memory is one
//! chunk plus a bounded buffer of rows not yet written, whatever the city.
//!
//! A lot's rows keep the order the warehouse scan gives them (chunks in file order, rows in order
//! within a chunk, a group's files in write order), so a lot read from the split equals the lot
//! read from the warehouse: [`crate::lots::load_lots_in`] and [`LotSplit::load`] share the code
//! that turns rows into [`LotInputs`].

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::error::{WarehouseError, io_error};
use crate::lots::{
    Columns, FactScans, LotFilter, LotInputs, LotsError, OCCUPANCY_COLUMNS, SESSION_COLUMNS,
    load_lots_from, polars_error,
};
use crate::schema::Table;
use crate::store::{Warehouse, partition_date_of};

/// Rows of warehouse files read at once by a chunked pass (whole partitions; a single partition
/// with more is one chunk). Counted in rows, not bytes: a year of a simulated 200-lot city's
/// occupancy is 18 MB of Parquet but 21 million rows, whose `lot_id` column alone took a GB
/// decoded at once. Two million rows of the few columns a pass reads are about 100 MB.
pub const CHUNK_ROWS: u64 = 2_000_000;

/// Rows held for the groups' files before they are written out, by polars' size estimate.
pub const BUFFER_BYTES: usize = 128 << 20;

/// How a split groups and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitOptions {
    /// Lots per group.
    pub group_lots: usize,
    /// Rows held before the groups' files are written ([`BUFFER_BYTES`]).
    pub buffer_bytes: usize,
}

impl SplitOptions {
    /// Groups of `group_lots`, the default buffer.
    pub fn new(group_lots: usize) -> Self {
        SplitOptions {
            group_lots: group_lots.max(1),
            buffer_bytes: BUFFER_BYTES,
        }
    }
}

/// A table's files (sorted, as [`Warehouse::table_files`] lists them) in consecutive runs of whole
/// partitions of about `chunk_rows` rows (from the files' footers).
fn chunks_of(files: &[PathBuf], chunk_rows: u64) -> Result<Vec<Vec<PathBuf>>, LotsError> {
    let mut chunks = Vec::new();
    let (mut start, mut rows) = (0, 0u64);
    for (index, path) in files.iter().enumerate() {
        let new_partition =
            index > 0 && partition_date_of(path) != partition_date_of(&files[index - 1]);
        if new_partition && rows >= chunk_rows {
            chunks.push(files[start..index].to_vec());
            (start, rows) = (index, 0);
        }
        let file = File::open(path).map_err(io_error("opening", path))?;
        rows += ParquetReader::new(file)
            .num_rows()
            .map_err(polars_error("reading a Parquet footer"))? as u64;
    }
    if start < files.len() {
        chunks.push(files[start..].to_vec());
    }
    Ok(chunks)
}

/// The occupancy and session files of a warehouse in chunks of whole partitions of about
/// `chunk_rows` rows: listed (and their footers read) once for the ids of a source and its split.
#[derive(Debug, Clone)]
pub struct FactChunks {
    occupancy: Vec<Vec<PathBuf>>,
    /// `None` when the warehouse has no session table (occupancy-only sources).
    sessions: Option<Vec<Vec<PathBuf>>>,
}

impl FactChunks {
    /// Lists the warehouse's fact files in chunks of about `chunk_rows` rows ([`CHUNK_ROWS`]).
    pub fn list(warehouse: &Warehouse, chunk_rows: u64) -> Result<Self, LotsError> {
        let sessions = match warehouse.table_files(Table::FactParkingSession) {
            Ok(files) => Some(chunks_of(&files, chunk_rows)?),
            Err(WarehouseError::MissingTable { .. }) => None,
            Err(error) => return Err(error.into()),
        };
        Ok(FactChunks {
            occupancy: chunks_of(&warehouse.table_files(Table::FactLotOccupancy)?, chunk_rows)?,
            sessions,
        })
    }

    /// How many chunks a split reads (and reports through its `advance`).
    pub fn len(&self) -> usize {
        self.occupancy.len() + self.sessions.as_ref().map_or(0, Vec::len)
    }

    /// Whether there is nothing to read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of `source`'s lots with occupancy, in order, read chunk by chunk.
    pub fn lot_ids(&self, warehouse: &Warehouse, source: &str) -> Result<Vec<String>, LotsError> {
        let mut ids = std::collections::BTreeSet::new();
        for chunk in &self.occupancy {
            let frame = warehouse
                .scan_files(Table::FactLotOccupancy, chunk)?
                .filter(col("source").eq(lit(source.to_owned())))
                .select([col("lot_id")])
                .unique(None, UniqueKeepStrategy::Any)
                .collect()
                .map_err(polars_error("reading fact_lot_occupancy"))?;
            ids.extend(
                Columns(&frame)
                    .text("lot_id")?
                    .iter()
                    .flatten()
                    .map(str::to_owned),
            );
        }
        Ok(ids.into_iter().collect())
    }
}

/// A source's occupancy and sessions, split by group of lots into files under a scratch folder.
#[derive(Debug)]
pub struct LotSplit {
    ids: Vec<String>,
    group_lots: usize,
    /// Per group, its occupancy files in write order.
    occupancy: Vec<Vec<PathBuf>>,
    /// Per group, its session files; `None` when the warehouse has no session table.
    sessions: Option<Vec<Vec<PathBuf>>>,
}

impl LotSplit {
    /// Splits `source`'s lots `ids` (from [`FactChunks::lot_ids`]: sorted, the rows of other lots
    /// are left out) into groups of `options.group_lots` and writes each group's occupancy and
    /// sessions, read chunk by chunk from `chunks`, under `root` (created if missing; the caller
    /// removes it). `advance` is called once per chunk read ([`FactChunks::len`] in all).
    pub fn write(
        warehouse: &Warehouse,
        source: &str,
        ids: Vec<String>,
        options: SplitOptions,
        chunks: &FactChunks,
        root: &Path,
        advance: &dyn Fn(),
    ) -> Result<Self, LotsError> {
        let group_lots = options.group_lots.max(1);
        debug_assert!(ids.is_sorted(), "lot ids should be sorted");
        let groups = ids.len().div_ceil(group_lots);
        let group_of: HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(position, id)| (id.as_str(), position / group_lots))
            .collect();
        let writer = GroupWriter {
            warehouse,
            source,
            group_of: &group_of,
            groups,
            root,
            options,
        };
        let occupancy = writer.split(Table::FactLotOccupancy, &chunks.occupancy, advance)?;
        let sessions = match &chunks.sessions {
            Some(sessions) => Some(writer.split(Table::FactParkingSession, sessions, advance)?),
            None => None,
        };
        Ok(LotSplit {
            ids,
            group_lots,
            occupancy,
            sessions,
        })
    }

    /// The source's lots with occupancy, in order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The lots `ids` (each of [`LotSplit::ids`]) read from their groups' files, keyed and ordered
    /// by lot id, as [`crate::lots::load_lots_in`] reads them from the warehouse.
    pub fn load(
        &self,
        warehouse: &Warehouse,
        source: &str,
        step_minutes: u32,
        ids: &[String],
    ) -> Result<BTreeMap<String, LotInputs>, LotsError> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut groups: Vec<usize> = ids
            .iter()
            .filter_map(|id| self.ids.binary_search(id).ok())
            .map(|position| position / self.group_lots)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        let filter = LotFilter {
            source,
            only: Some(ids),
        };
        let files_of = |per_group: &[Vec<PathBuf>]| -> Vec<PathBuf> {
            groups
                .iter()
                .flat_map(|group| per_group[*group].iter().cloned())
                .collect()
        };
        let scan = |files: Vec<PathBuf>| -> Result<Option<LazyFrame>, LotsError> {
            if files.is_empty() {
                return Ok(None);
            }
            let sources = ScanSources::Paths(
                files
                    .iter()
                    .map(|path| PlRefPath::new(path.to_string_lossy().into_owned()))
                    .collect(),
            );
            let scan = LazyFrame::scan_parquet_sources(sources, ScanArgsParquet::default())
                .map_err(polars_error("scanning a lot group's files"))?;
            Ok(Some(match filter.lots_predicate() {
                Some(predicate) => scan.filter(predicate),
                None => scan,
            }))
        };
        let Some(occupancy) = scan(files_of(&self.occupancy))? else {
            return Ok(BTreeMap::new());
        };
        let sessions = match &self.sessions {
            Some(sessions) => scan(files_of(sessions))?,
            None => None,
        };
        load_lots_from(
            warehouse,
            &filter,
            step_minutes,
            FactScans {
                occupancy,
                sessions,
            },
        )
    }
}

/// Writes a table's rows into per-group files.
struct GroupWriter<'a> {
    warehouse: &'a Warehouse,
    source: &'a str,
    group_of: &'a HashMap<&'a str, usize>,
    groups: usize,
    root: &'a Path,
    options: SplitOptions,
}

impl GroupWriter<'_> {
    /// Reads `table` chunk by chunk and returns each group's files in write order.
    fn split(
        &self,
        table: Table,
        chunks: &[Vec<PathBuf>],
        advance: &dyn Fn(),
    ) -> Result<Vec<Vec<PathBuf>>, LotsError> {
        let dir = self.root.join(table.name());
        fs::create_dir_all(&dir).map_err(io_error("creating a split folder", &dir))?;
        let columns: Vec<Expr> = match table {
            Table::FactParkingSession => SESSION_COLUMNS.map(col).to_vec(),
            _ => OCCUPANCY_COLUMNS.map(col).to_vec(),
        };
        let mut pending: Vec<Vec<DataFrame>> = vec![Vec::new(); self.groups];
        let mut pending_bytes = 0usize;
        let mut written: Vec<Vec<PathBuf>> = vec![Vec::new(); self.groups];
        for chunk in chunks {
            let frame = self
                .warehouse
                .scan_files(table, chunk)?
                .filter(col("source").eq(lit(self.source.to_owned())))
                .select(columns.clone())
                .collect()
                .map_err(polars_error("reading a chunk of a fact table"))?;
            let mut rows: Vec<Vec<IdxSize>> = vec![Vec::new(); self.groups];
            for (row, id) in Columns(&frame).text("lot_id")?.iter().enumerate() {
                if let Some(group) = id.and_then(|id| self.group_of.get(id)) {
                    rows[*group].push(row as IdxSize);
                }
            }
            for (group, rows) in rows.into_iter().enumerate() {
                if rows.is_empty() {
                    continue;
                }
                let part = frame
                    .take(&IdxCa::from_vec(PlSmallStr::EMPTY, rows))
                    .map_err(polars_error("splitting a chunk by group"))?;
                pending_bytes += part.estimated_size();
                pending[group].push(part);
            }
            if pending_bytes > self.options.buffer_bytes {
                write_pending(&dir, &mut pending, &mut written)?;
                pending_bytes = 0;
            }
            advance();
        }
        write_pending(&dir, &mut pending, &mut written)?;
        Ok(written)
    }
}

/// Writes each group's pending rows as its next file.
fn write_pending(
    dir: &Path,
    pending: &mut [Vec<DataFrame>],
    written: &mut [Vec<PathBuf>],
) -> Result<(), LotsError> {
    for (group, frames) in pending.iter_mut().enumerate() {
        let mut frames = std::mem::take(frames).into_iter();
        let Some(mut frame) = frames.next() else {
            continue;
        };
        for next in frames {
            frame
                .vstack_mut_owned(next)
                .map_err(polars_error("joining a group's rows"))?;
        }
        let path = dir.join(format!(
            "group-{group:06}-{:04}.parquet",
            written[group].len()
        ));
        let file = File::create(&path).map_err(io_error("creating", &path))?;
        ParquetWriter::new(file)
            .with_compression(ParquetCompression::Zstd(None))
            .finish(&mut frame)
            .map_err(polars_error("writing a lot group's file"))?;
        written[group].push(path);
    }
    Ok(())
}
