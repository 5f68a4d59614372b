//! Training matrices built in shards, for a city too large for one machine: an existing
//! distributed engine (Apache Spark, `scripts/spark/features.py`) runs `parkcast features build
//! --shard I/N` on its workers, and `parkcast train --matrix DIR` fits on what they wrote. No
//! scheduler of our own: the engine places, retries and reports the shards.
//!
//! The work splits along the lot groups of [`crate::groups`]: a [`BuildPlan`] (written once, by
//! `parkcast features plan`, which reads the city's usability pass) fixes the usable lots in code
//! order (a lot's code is a feature), the group size, and each fit's cut-off with its origin stride
//! (the stride depends on every lot's readings, so a shard could not work it out alone). Shard `I`
//! of `N` builds the groups `g` with `g % N == I` for every cut, as the same Parquet parts a single
//! machine writes (`cut-{date}/h{minutes}/part-{group}.parquet`), and records what it wrote in
//! `_shards/shard-{I}-of-{N}.json` last, so a shard that died is seen as missing. A fit reads the
//! parts in group order: the same rows in the same order as on one machine, so the same seed gives
//! the same model, bit for bit.
//!
//! The cost model, measured on 2 cores (README, "Training at city scale"): building the rows is a
//! few percent of a run; the fits are the rest, and they read one horizon's rows at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::backtest::{
    BacktestConfig, BacktestError, prepare, sum_rows, training_stride, write_group_rows,
};
use crate::groups::{GroupReader, LotGroups};
use crate::matrix::MatrixDir;
use crate::progress::Progress;
use parkcast_warehouse::Warehouse;

/// The plan's file name in a matrix folder.
pub const PLAN_FILE: &str = "plan.json";
/// The folder of the shards' completion records.
const SHARDS_DIR: &str = "_shards";
/// Version of [`BuildPlan`]'s layout.
pub const PLAN_FORMAT: u32 = 1;

/// What every shard needs to build its part of the training matrices without reading the whole
/// city.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildPlan {
    /// [`PLAN_FORMAT`].
    pub format: u32,
    /// The source.
    pub source: String,
    /// Grid step, minutes.
    pub step_minutes: u32,
    /// Horizons, grid steps.
    pub horizons: Vec<u32>,
    /// Same-day pairs only.
    pub same_day: bool,
    /// Days of history per fit (`None`: all).
    pub training_days: Option<u32>,
    /// Cap on training rows per horizon.
    pub max_training_rows: usize,
    /// Lots per group.
    pub group_lots: usize,
    /// The usable lots, in code order.
    pub lots: Vec<String>,
    /// Every fit's cut-off and origin stride, in the order the run fits.
    pub cuts: Vec<PlannedCut>,
}

/// One fit's cut-off and the origin stride that keeps its rows under the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedCut {
    /// Training rows have targets before this local date.
    pub cut: NaiveDate,
    /// Every `stride`-th origin.
    pub stride: u32,
}

/// Shard `index` of `count` (`I/N` on the command line, `I` from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, from 0.
    pub index: usize,
    /// How many shards.
    pub count: usize,
}

impl Shard {
    /// Whether group `group` is this shard's.
    pub fn owns(&self, group: usize) -> bool {
        group % self.count == self.index
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parsed = text.split_once('/').and_then(|(index, count)| {
            Some((index.trim().parse().ok()?, count.trim().parse().ok()?))
        });
        match parsed {
            Some((index, count)) if count > 0 && index < count => Ok(Shard { index, count }),
            _ => Err(format!(
                "{text:?} is not a shard: write I/N with 0 <= I < N (0/4 is the first of four)"
            )),
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}/{}", self.index, self.count)
    }
}

/// What one shard wrote: rows per cut and horizon (minutes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardRecord {
    /// The shard.
    pub index: usize,
    /// Of how many.
    pub count: usize,
    /// Rows written per cut and horizon.
    pub rows: BTreeMap<NaiveDate, BTreeMap<u32, usize>>,
}

fn io_error(path: &Path, what: &str, error: impl std::fmt::Display) -> BacktestError {
    BacktestError::Prebuilt {
        path: path.to_owned(),
        reason: format!("{what}: {error}"),
    }
}

fn cut_dir(root: &Path, cut: NaiveDate) -> PathBuf {
    root.join(format!("cut-{cut}"))
}

/// Writes `value` as JSON to `path` atomically (a temporary file renamed into place).
fn write_json(path: &Path, value: &impl Serialize) -> Result<(), BacktestError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|error| io_error(path, "encoding", error))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|error| io_error(parent, "creating", error))?;
    }
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|error| io_error(path, "writing", error))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, BacktestError> {
    let text = std::fs::read_to_string(path).map_err(|error| io_error(path, "reading", error))?;
    serde_json::from_str(&text).map_err(|error| io_error(path, "parsing", error))
}

impl BuildPlan {
    /// The plan of a run of `config` over `lots`: its backtest's fits and, if `refit`, the final
    /// refit on all data.
    pub fn for_run(lots: &LotGroups<'_>, config: &BacktestConfig, refit: bool) -> Self {
        let mut cuts = config.cuts();
        if refit {
            cuts.push(crate::train::refit_cut(lots, config));
        }
        // A run fits each cut-off once (weekly windows share them), so each is built once.
        let mut seen = std::collections::BTreeSet::new();
        cuts.retain(|cut| seen.insert(*cut));
        BuildPlan {
            format: PLAN_FORMAT,
            source: config.source.clone(),
            step_minutes: config.step_minutes,
            horizons: config.horizons.clone(),
            same_day: config.same_day,
            training_days: config.training_days,
            max_training_rows: config.max_training_rows,
            group_lots: config.group_lots,
            lots: lots.reader().ids().to_vec(),
            cuts: cuts
                .into_iter()
                .map(|cut| PlannedCut {
                    cut,
                    stride: training_stride(lots.lots(), config, cut),
                })
                .collect(),
        }
    }

    /// Reads the plan of a matrix folder.
    pub fn read(root: &Path) -> Result<Self, BacktestError> {
        let plan: BuildPlan = read_json(&root.join(PLAN_FILE))?;
        if plan.format != PLAN_FORMAT {
            return Err(io_error(
                root,
                "plan",
                format!("format {} (this build reads {PLAN_FORMAT})", plan.format),
            ));
        }
        Ok(plan)
    }

    /// Writes the plan into a matrix folder (created if missing), replacing what an earlier plan
    /// built there.
    pub fn write(&self, root: &Path) -> Result<(), BacktestError> {
        if root.exists() {
            std::fs::remove_dir_all(root).map_err(|error| io_error(root, "clearing", error))?;
        }
        write_json(&root.join(PLAN_FILE), self)
    }

    /// The protocol a shard builds rows with (the fields rows depend on).
    fn config(&self) -> BacktestConfig {
        BacktestConfig {
            source: self.source.clone(),
            step_minutes: self.step_minutes,
            horizons: self.horizons.clone(),
            same_day: self.same_day,
            training_days: self.training_days,
            max_training_rows: self.max_training_rows,
            group_lots: self.group_lots,
            ..BacktestConfig::birmingham()
        }
    }

    /// Groups per cut.
    pub fn group_count(&self) -> usize {
        self.lots.len().div_ceil(self.group_lots.max(1))
    }
}

/// Reads the city once and writes the plan of a `train` run of `config` into `root`.
pub fn plan(
    warehouse: &Warehouse,
    config: &BacktestConfig,
    root: &Path,
    progress: &dyn Progress,
) -> Result<BuildPlan, BacktestError> {
    let (lots, _) = prepare(warehouse, config, progress)?;
    let plan = BuildPlan::for_run(&lots, config, true);
    plan.write(root)?;
    Ok(plan)
}

/// Builds shard `shard`'s groups of every planned cut into `root`, then records it.
pub fn build(
    warehouse: &Warehouse,
    root: &Path,
    shard: Shard,
    progress: &dyn Progress,
) -> Result<ShardRecord, BacktestError> {
    let plan = BuildPlan::read(root)?;
    let config = plan.config();
    let (reader, _split) = GroupReader::new(
        warehouse,
        &plan.source,
        plan.step_minutes,
        plan.lots.clone(),
        plan.group_lots,
    )
    .split_for(&config, |group| shard.owns(group), progress)?;
    let owned = (0..reader.group_count())
        .filter(|group| shard.owns(*group))
        .count();
    let mut record = ShardRecord {
        index: shard.index,
        count: shard.count,
        rows: BTreeMap::new(),
    };
    for (position, planned) in plan.cuts.iter().enumerate() {
        progress.stage(
            &format!(
                "shard {shard}: cut {} ({}/{}), {owned} of {} groups",
                planned.cut,
                position + 1,
                plan.cuts.len(),
                reader.group_count()
            ),
            Some(owned as u64),
        );
        let matrix = MatrixDir::new(cut_dir(root, planned.cut));
        let counts = reader.map(
            progress,
            |group| shard.owns(group),
            |group| write_group_rows(&group, &config, planned.cut, planned.stride, &matrix),
        )?;
        record.rows.insert(planned.cut, sum_rows(counts));
    }
    write_json(
        &root
            .join(SHARDS_DIR)
            .join(format!("shard-{}-of-{}.json", shard.index, shard.count)),
        &record,
    )?;
    Ok(record)
}

/// A matrix built by shards, checked against the run that reads it.
#[derive(Debug)]
pub struct Prebuilt {
    root: PathBuf,
    rows: BTreeMap<NaiveDate, BTreeMap<u32, usize>>,
}

impl Prebuilt {
    /// Opens the matrix at `root` for a run of `config` over `lots`: its plan must be this run's
    /// (same protocol, lots, group size, cuts and strides) and every shard must have finished.
    pub fn open(
        root: &Path,
        lots: &LotGroups<'_>,
        config: &BacktestConfig,
    ) -> Result<Self, BacktestError> {
        let plan = BuildPlan::read(root)?;
        let mismatch = |reason: String| BacktestError::Prebuilt {
            path: root.to_owned(),
            reason,
        };
        // The fits this run makes (a validation-only run makes a subset of a training run's).
        let expected = BuildPlan::for_run(lots, config, true);
        let differs = [
            ("source", plan.source != expected.source),
            ("grid step", plan.step_minutes != expected.step_minutes),
            ("horizons", plan.horizons != expected.horizons),
            ("same-day pairs", plan.same_day != expected.same_day),
            (
                "training days",
                plan.training_days != expected.training_days,
            ),
            (
                "row cap",
                plan.max_training_rows != expected.max_training_rows,
            ),
            ("group size", plan.group_lots != expected.group_lots),
            ("usable lots", plan.lots != expected.lots),
        ];
        if let Some((what, _)) = differs.iter().find(|(_, differs)| *differs) {
            return Err(mismatch(format!(
                "its plan was made for another {what} than this run's; plan it again with the same flags"
            )));
        }
        for cut in &expected.cuts {
            if !plan.cuts.contains(cut) {
                return Err(mismatch(format!(
                    "this run fits before {} with stride {}, which the plan does not build",
                    cut.cut, cut.stride
                )));
            }
        }
        let records = read_records(root)?;
        let count = records.first().map_or(0, |record| record.count);
        let missing: Vec<String> = (0..count.max(1))
            .filter(|index| {
                !records
                    .iter()
                    .any(|record| record.index == *index && record.count == count)
            })
            .map(|index| format!("{index}/{}", count.max(1)))
            .collect();
        if !missing.is_empty() || records.iter().any(|record| record.count != count) {
            return Err(mismatch(format!(
                "shards not finished: {} (found {} records)",
                missing.join(", "),
                records.len()
            )));
        }
        let mut by_cut: BTreeMap<NaiveDate, Vec<BTreeMap<u32, usize>>> = BTreeMap::new();
        for record in records {
            for (cut, horizons) in record.rows {
                by_cut.entry(cut).or_default().push(horizons);
            }
        }
        Ok(Prebuilt {
            root: root.to_owned(),
            rows: by_cut
                .into_iter()
                .map(|(cut, shards)| (cut, sum_rows(shards)))
                .collect(),
        })
    }

    /// The matrix of the fit before `cut`, with its rows per horizon.
    pub fn matrix(
        &self,
        cut: NaiveDate,
    ) -> Result<(MatrixDir, BTreeMap<u32, usize>), BacktestError> {
        let rows: BTreeMap<u32, usize> = self
            .rows
            .get(&cut)
            .map(|horizons| {
                horizons
                    .iter()
                    .filter(|(_, count)| **count > 0)
                    .map(|(minutes, count)| (*minutes, *count))
                    .collect()
            })
            .unwrap_or_default();
        if rows.is_empty() {
            return Err(crate::backtest::NO_TRAINING_ROWS);
        }
        Ok((MatrixDir::new(cut_dir(&self.root, cut)), rows))
    }
}

/// The completion records of the shards that finished.
fn read_records(root: &Path) -> Result<Vec<ShardRecord>, BacktestError> {
    let dir = root.join(SHARDS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error(&dir, "listing", error)),
    };
    let mut records = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|error| io_error(&dir, "listing", error))?
            .path();
        if path
            .extension()
            .is_some_and(|extension| extension == "json")
        {
            records.push(read_json::<ShardRecord>(&path)?);
        }
    }
    records.sort_by_key(|record| record.index);
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_is_written_i_of_n_and_owns_every_nth_group() {
        let shard: Shard = "1/3".parse().expect("shard");
        assert_eq!(shard, Shard { index: 1, count: 3 });
        assert_eq!(shard.to_string(), "1/3");
        let owned: Vec<usize> = (0..8).filter(|group| shard.owns(*group)).collect();
        assert_eq!(owned, vec![1, 4, 7]);
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            let error = bad.parse::<Shard>().expect_err(bad);
            assert!(error.contains("I/N"), "{error}");
        }
    }
}
