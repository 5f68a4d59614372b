//! The usable lots of a run, read from the warehouse one group of lots at a time.
//!
//! A city's history does not fit in memory at once (a year of 5-minute readings and sessions is
//! about 6 MB per lot, and a large operator has thousands), so the trainer never holds it: each
//! pass over the city (usability, training rows, scoring, the model file) reads a group of
//! [`BacktestConfig::group_lots`] lots with scans filtered on their ids
//! ([`parkcast_warehouse::lots::load_lots_in`]), works on it and drops it before the next. Groups
//! run in parallel on rayon's threads, and their results come back in lot order, so the outcome
//! does not depend on the group size or the thread count: a run with one group for the whole city
//! (the all-in-memory path) gives the same figures, bit for bit.
//!
//! What a run keeps per lot between passes is a [`LotSummary`]: its id, time zone, last reading and
//! the number of grid readings per local day (what the training-row cap needs to thin origins
//! evenly without reading the lots again).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use chrono_tz::Tz;
use std::sync::Arc;

use parkcast_warehouse::Warehouse;
use parkcast_warehouse::lots::{GridGaps, LotInputs, coverage, load_lots_in, warn_if_sparse};
use parkcast_warehouse::split::{CHUNK_ROWS, FactChunks, LotSplit, SplitOptions};
use rayon::prelude::*;

use crate::backtest::{BacktestConfig, BacktestError};
use crate::progress::Progress;

/// Lots per group when a run does not say: a year of one lot is about 6 MB of inputs, and its
/// features a few more while they are built, so two groups in flight stay in the hundreds of MB.
pub const DEFAULT_GROUP_LOTS: usize = 16;

/// What a run keeps of a lot between passes.
#[derive(Debug, Clone, PartialEq)]
pub struct LotSummary {
    /// The lot.
    pub lot_id: String,
    /// Its time zone.
    pub timezone: Tz,
    /// Its last grid instant with a value, ms.
    pub last_ms: i64,
    /// Whether it has hourly tariffs (the price feature has values).
    pub has_tariffs: bool,
    /// Grid instants with a value per local day.
    readings_per_day: BTreeMap<NaiveDate, u32>,
}

impl LotSummary {
    fn of(lot: &LotInputs) -> Option<Self> {
        let mut readings_per_day = BTreeMap::new();
        let mut last_ms = None;
        for (instant, _) in lot.series.iter() {
            *readings_per_day
                .entry(lot.series.local(instant).date())
                .or_insert(0) += 1;
            last_ms = Some(instant);
        }
        Some(LotSummary {
            lot_id: lot.lot_id.clone(),
            timezone: lot.series.timezone(),
            last_ms: last_ms?,
            has_tariffs: !lot.context.tariffs.is_empty(),
            readings_per_day,
        })
    }

    /// Grid instants with a value on the local days `[from, until)` (`None`: from the first).
    pub fn readings_between(&self, from: Option<NaiveDate>, until: NaiveDate) -> usize {
        let counts = match from {
            Some(from) if from < until => self.readings_per_day.range(from..until),
            Some(_) => return 0,
            None => self.readings_per_day.range(..until),
        };
        counts.map(|(_, count)| *count as usize).sum()
    }

    /// Whether the lot is usable: it has readings on at least `min_day_share` of the days from its
    /// first reading to `first_start` (the first window's first day).
    fn usable(&self, config: &BacktestConfig, first_start: NaiveDate) -> bool {
        let training_days = self.readings_per_day.range(..first_start).count();
        let span_days = self
            .first_day()
            .map_or(0, |first| (first_start - first).num_days().max(1));
        (training_days as f64) >= config.min_day_share * span_days as f64
    }

    /// The local date of its first reading.
    pub fn first_day(&self) -> Option<NaiveDate> {
        self.readings_per_day.keys().next().copied()
    }

    /// The local date of its last reading.
    pub fn last_day(&self) -> Option<NaiveDate> {
        self.readings_per_day.keys().next_back().copied()
    }
}

/// One group of lots, as a pass sees it.
pub struct Group<'g> {
    /// The group's position, from 0.
    pub index: usize,
    /// The code (position among the usable lots) of its first lot; the others follow.
    pub first_code: usize,
    /// Its lots, in code order.
    pub lots: &'g [LotInputs],
}

impl Group<'_> {
    /// Each lot with its code.
    pub fn coded(&self) -> impl Iterator<Item = (usize, &LotInputs)> {
        self.lots
            .iter()
            .enumerate()
            .map(|(offset, lot)| (self.first_code + offset, lot))
    }
}

/// Reads lots by group, from the warehouse with filtered scans or from a [`LotSplit`] of it:
/// groups of `group_lots` consecutive ids, each lot's code its position in `ids`.
pub struct GroupReader<'a> {
    warehouse: &'a Warehouse,
    source: String,
    step_minutes: u32,
    ids: Vec<String>,
    group_lots: usize,
    split: Option<Arc<LotSplit>>,
}

impl<'a> GroupReader<'a> {
    /// A reader of `ids` (in code order) of `source`, `group_lots` at a time.
    pub fn new(
        warehouse: &'a Warehouse,
        source: &str,
        step_minutes: u32,
        ids: Vec<String>,
        group_lots: usize,
    ) -> Self {
        GroupReader {
            warehouse,
            source: source.to_owned(),
            step_minutes,
            ids,
            group_lots: group_lots.max(1),
            split: None,
        }
    }

    /// The same reader, reading from `split` (a split of the same source of the same warehouse).
    fn reading_split(mut self, split: Option<Arc<LotSplit>>) -> Self {
        self.split = split;
        self
    }

    /// The lots, in code order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The same reader over a split of the lots of the groups `wanted` keeps (a shard's), when
    /// they are more than one group: several passes over a few groups then read the warehouse
    /// once, not once per group and pass. The scratch folder returned holds the split.
    pub(crate) fn split_for(
        self,
        config: &BacktestConfig,
        wanted: impl Fn(usize) -> bool,
        progress: &dyn Progress,
    ) -> Result<(Self, Option<tempfile::TempDir>), BacktestError> {
        let groups: Vec<usize> = (0..self.group_count()).filter(|g| wanted(*g)).collect();
        if groups.len() < 2 {
            return Ok((self, None));
        }
        let ids: Vec<String> = groups
            .iter()
            .flat_map(|group| {
                let first = group * self.group_lots;
                self.ids[first..(first + self.group_lots).min(self.ids.len())].iter()
            })
            .cloned()
            .collect();
        let chunks = FactChunks::list(self.warehouse, CHUNK_ROWS)?;
        let (split, scratch) = write_split(self.warehouse, config, &chunks, ids, progress)?;
        Ok((self.reading_split(Some(split)), Some(scratch)))
    }

    /// How many groups a pass reads.
    pub fn group_count(&self) -> usize {
        self.ids.len().div_ceil(self.group_lots)
    }

    /// Runs `each` on every group that `wanted` keeps, in parallel, and returns its results in
    /// group order. Each group is read when its turn comes and dropped when `each` returns;
    /// `progress` advances by one per group (the caller starts the stage).
    pub fn map<T: Send>(
        &self,
        progress: &dyn Progress,
        wanted: impl Fn(usize) -> bool + Sync,
        each: impl Fn(Group<'_>) -> Result<T, BacktestError> + Sync,
    ) -> Result<Vec<T>, BacktestError> {
        (0..self.group_count())
            .into_par_iter()
            .filter(|index| wanted(*index))
            .map(|index| {
                let first_code = index * self.group_lots;
                let ids = &self.ids[first_code..(first_code + self.group_lots).min(self.ids.len())];
                let read = read_lots(
                    self.warehouse,
                    &self.source,
                    self.step_minutes,
                    self.split.as_deref(),
                    ids,
                )?;
                if read.len() != ids.len() {
                    return Err(BacktestError::WarehouseChanged {
                        expected: ids.len(),
                        found: read.len(),
                    });
                }
                let lots: Vec<LotInputs> = read.into_values().collect();
                let result = each(Group {
                    index,
                    first_code,
                    lots: &lots,
                });
                progress.advance(1);
                result
            })
            .collect()
    }
}

/// The usable lots of a run, what it keeps of each, and how to read them.
pub struct LotGroups<'a> {
    reader: GroupReader<'a>,
    lots: Vec<LotSummary>,
    /// Where the split of the warehouse lives, removed with the groups.
    _scratch: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for LotGroups<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LotGroups")
            .field("lots", &self.lots.len())
            .field("group_lots", &self.reader.group_lots)
            .finish()
    }
}

/// What one group of the usability pass found.
#[derive(Default)]
struct Found {
    usable: Vec<LotSummary>,
    excluded: Vec<String>,
    gaps: GridGaps,
    filled: bool,
}

/// The lots `ids` of `source`, from `split` if there is one, else from the warehouse.
fn read_lots(
    warehouse: &Warehouse,
    source: &str,
    step_minutes: u32,
    split: Option<&LotSplit>,
    ids: &[String],
) -> Result<BTreeMap<String, LotInputs>, BacktestError> {
    Ok(match split {
        Some(split) => split.load(warehouse, source, step_minutes, ids)?,
        None => load_lots_in(warehouse, source, step_minutes, Some(ids))?,
    })
}

/// The source's lot ids, and, when they make more than one group, a split of its facts by group
/// in a scratch folder (see [`LotSplit`]): every later pass then reads only its group's rows.
#[allow(clippy::type_complexity)]
fn split_by_group(
    warehouse: &Warehouse,
    config: &BacktestConfig,
    progress: &dyn Progress,
) -> Result<
    (
        Vec<String>,
        Option<Arc<LotSplit>>,
        Option<tempfile::TempDir>,
    ),
    BacktestError,
> {
    let chunks = FactChunks::list(warehouse, CHUNK_ROWS)?;
    let ids = chunks.lot_ids(warehouse, &config.source)?;
    if ids.len() <= config.group_lots.max(1) {
        return Ok((ids, None, None));
    }
    let (split, scratch) = write_split(warehouse, config, &chunks, ids, progress)?;
    Ok((split.ids().to_vec(), Some(split), Some(scratch)))
}

/// Splits the config's source's lots `ids` (sorted), read from `chunks`, into groups of
/// `config.group_lots` in a new scratch folder, which the caller keeps as long as it reads the
/// split.
fn write_split(
    warehouse: &Warehouse,
    config: &BacktestConfig,
    chunks: &FactChunks,
    ids: Vec<String>,
    progress: &dyn Progress,
) -> Result<(Arc<LotSplit>, tempfile::TempDir), BacktestError> {
    let scratch = crate::backtest::scratch_dir(config, "parkcast-lots-")?;
    progress.stage(
        &format!(
            "splitting {} lots into groups of {}",
            ids.len(),
            config.group_lots
        ),
        Some(chunks.len() as u64),
    );
    let split = LotSplit::write(
        warehouse,
        &config.source,
        ids,
        SplitOptions::new(config.group_lots),
        chunks,
        scratch.path(),
        &|| progress.advance(1),
    )?;
    Ok((Arc::new(split), scratch))
}

impl<'a> LotGroups<'a> {
    /// The usable lots of the config's source in `warehouse` (and the ids of those left out), read
    /// group by group; errors when the source has no lot or no usable one. Warns when most grid
    /// steps lack a value (a source that writes only changes: `import --fill-forward`).
    pub fn scan(
        warehouse: &'a Warehouse,
        config: &BacktestConfig,
        progress: &dyn Progress,
    ) -> Result<(Self, Vec<String>), BacktestError> {
        Self::scan_warning(warehouse, config, progress, true)
    }

    /// [`LotGroups::scan`] for a city that lends rows to another's grid ([`crate::prior`]): its
    /// steps are empty wherever that grid is finer than its readings, which is no fault of its
    /// import, so it gets no advice to import it again.
    pub(crate) fn scan_lender(
        warehouse: &'a Warehouse,
        config: &BacktestConfig,
        progress: &dyn Progress,
    ) -> Result<(Self, Vec<String>), BacktestError> {
        Self::scan_warning(warehouse, config, progress, false)
    }

    fn scan_warning(
        warehouse: &'a Warehouse,
        config: &BacktestConfig,
        progress: &dyn Progress,
        warn_sparse: bool,
    ) -> Result<(Self, Vec<String>), BacktestError> {
        let (ids, split, scratch) = split_by_group(warehouse, config, progress)?;
        if ids.is_empty() {
            return Err(BacktestError::NoSuchSource {
                source_name: config.source.clone(),
                available: crate::protocol::sources(warehouse)?
                    .into_iter()
                    .map(|source| format!("{} ({} lots)", source.source, source.lots))
                    .collect(),
            });
        }
        let first_start = config.first_start();
        let chunks: Vec<&[String]> = ids.chunks(config.group_lots.max(1)).collect();
        progress.stage(
            &format!("reading {} lots in {} groups", ids.len(), chunks.len()),
            Some(chunks.len() as u64),
        );
        let found = chunks
            .par_iter()
            .map(|chunk| {
                let lots = read_lots(
                    warehouse,
                    &config.source,
                    config.step_minutes,
                    split.as_deref(),
                    chunk,
                )?;
                let (gaps, filled) = coverage(lots.values(), config.step_minutes);
                let mut found = Found {
                    gaps,
                    filled,
                    ..Found::default()
                };
                for lot in lots.values() {
                    match LotSummary::of(lot).filter(|lot| lot.usable(config, first_start)) {
                        Some(summary) => found.usable.push(summary),
                        None => found.excluded.push(lot.lot_id.clone()),
                    }
                }
                progress.advance(1);
                Ok(found)
            })
            .collect::<Result<Vec<Found>, BacktestError>>()?;
        let mut all = Found::default();
        for group in found {
            all.usable.extend(group.usable);
            all.excluded.extend(group.excluded);
            all.gaps = all.gaps.plus(group.gaps);
            all.filled |= group.filled;
        }
        if warn_sparse {
            warn_if_sparse(&config.source, config.step_minutes, all.gaps, all.filled);
        }
        if all.usable.is_empty() {
            return Err(BacktestError::NoUsableLot {
                source_name: config.source.clone(),
                min_day_share: config.min_day_share * 100.0,
            });
        }
        let ids = all.usable.iter().map(|lot| lot.lot_id.clone()).collect();
        let groups = LotGroups {
            reader: GroupReader::new(
                warehouse,
                &config.source,
                config.step_minutes,
                ids,
                config.group_lots,
            )
            .reading_split(split),
            lots: all.usable,
            _scratch: scratch,
        };
        Ok((groups, all.excluded))
    }

    /// The usable lots, in code order.
    pub fn lots(&self) -> &[LotSummary] {
        &self.lots
    }

    /// Whether any lot has hourly tariffs (the price feature has values somewhere).
    pub fn any_tariffs(&self) -> bool {
        self.lots.iter().any(|lot| lot.has_tariffs)
    }

    /// How many groups a pass reads.
    pub fn group_count(&self) -> usize {
        self.reader.group_count()
    }

    /// The reader of the usable lots.
    pub fn reader(&self) -> &GroupReader<'a> {
        &self.reader
    }

    /// Runs `each` on every group, in parallel, and returns its results in group order
    /// ([`GroupReader::map`]).
    pub fn map<T: Send>(
        &self,
        progress: &dyn Progress,
        each: impl Fn(Group<'_>) -> Result<T, BacktestError> + Sync,
    ) -> Result<Vec<T>, BacktestError> {
        self.reader.map(progress, |_| true, each)
    }
}
