//! A training matrix on disk: for each horizon, one Parquet file per lot group, written as each
//! group's rows are built and read back one horizon at a time when its model is fitted.
//!
//! The rows of every horizon of a city held at once were the trainer's largest allocation after its
//! inputs (400k rows x 8 horizons x 39 features of 8 bytes is 1 GB); on disk, a fit holds one
//! horizon's rows. The layout is also what a shard of a distributed build writes
//! (`parkcast features build --shard`): a folder per horizon, `h{minutes}`, of parts named by
//! group, read in name order, so rows come back in the order a single machine builds them.
//!
//! Columns: `origin_ms` (Int64), the [`FEATURE_NAMES`] in order and `target` (Float64).
//! Values are written uncompressed: the files live for one run, and f64 features barely compress.

use std::fs::File;
use std::path::{Path, PathBuf};

use parkcast_features::vector::{FEATURE_COUNT, FEATURE_NAMES, FeatureVector};
use parkcast_inference::model::HorizonRows;
use polars::prelude::*;

/// Stack of the thread that writes a part: polars' Parquet writer recurses deeply, deeper than
/// rayon's worker stacks allow for a frame of 41 columns.
const WRITER_STACK_BYTES: usize = 8 * 1024 * 1024;

/// Errors of reading or writing a training matrix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MatrixError {
    /// A file or folder could not be created, listed or opened.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Polars could not write or read a part.
    #[error("{context} {}: {source}", path.display())]
    Polars {
        /// What was being done.
        context: &'static str,
        /// The part.
        path: PathBuf,
        /// The error.
        source: PolarsError,
    },
}

/// One group's training rows of one horizon, with their origins.
#[derive(Debug, Default, Clone)]
pub struct PartRows {
    /// The origin of each row, ms.
    pub origins_ms: Vec<i64>,
    /// The feature vectors and targets.
    pub rows: HorizonRows,
}

impl PartRows {
    /// Adds a row.
    pub fn push(&mut self, origin_ms: i64, features: FeatureVector, target: f64) {
        self.origins_ms.push(origin_ms);
        self.rows.features.push(features);
        self.rows.targets.push(target);
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.origins_ms.len()
    }

    /// Whether it holds no row.
    pub fn is_empty(&self) -> bool {
        self.origins_ms.is_empty()
    }
}

/// A matrix folder: `h{minutes}/part-{group}.parquet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixDir {
    root: PathBuf,
}

impl MatrixDir {
    /// The matrix under `root` (created on the first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        MatrixDir { root: root.into() }
    }

    /// Its folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn horizon_dir(&self, horizon_minutes: u32) -> PathBuf {
        self.root.join(format!("h{horizon_minutes:05}"))
    }

    /// Writes one group's rows of one horizon; an empty part writes nothing. Safe to call from
    /// several threads for different groups.
    pub fn write_part(
        &self,
        horizon_minutes: u32,
        group: usize,
        part: &PartRows,
    ) -> Result<(), MatrixError> {
        if part.is_empty() {
            return Ok(());
        }
        let dir = self.horizon_dir(horizon_minutes);
        std::fs::create_dir_all(&dir).map_err(|source| MatrixError::Io {
            context: "creating the matrix folder",
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(format!("part-{group:06}.parquet"));
        let polars = |source| MatrixError::Polars {
            context: "writing the matrix part",
            path: path.clone(),
            source,
        };
        let mut frame = part_frame(part).map_err(polars)?;
        let file = File::create(&path).map_err(|source| MatrixError::Io {
            context: "creating the matrix part",
            path: path.clone(),
            source,
        })?;
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .stack_size(WRITER_STACK_BYTES)
                .spawn_scoped(scope, || {
                    ParquetWriter::new(file)
                        .with_compression(ParquetCompression::Uncompressed)
                        .finish(&mut frame)
                })
                .map_err(|source| MatrixError::Io {
                    context: "starting the writer thread for",
                    path: path.clone(),
                    source,
                })?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                .map(drop)
                .map_err(polars)
        })
    }

    /// The parts of one horizon, in group order (empty when none was written).
    pub fn parts(&self, horizon_minutes: u32) -> Result<Vec<PathBuf>, MatrixError> {
        let dir = self.horizon_dir(horizon_minutes);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(MatrixError::Io {
                    context: "listing the matrix folder",
                    path: dir,
                    source,
                });
            }
        };
        let mut parts = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| MatrixError::Io {
                context: "listing the matrix folder",
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            if path
                .extension()
                .is_some_and(|extension| extension == "parquet")
            {
                parts.push(path);
            }
        }
        parts.sort();
        Ok(parts)
    }

    /// Every row of one horizon, parts in group order.
    pub fn read(&self, horizon_minutes: u32) -> Result<HorizonRows, MatrixError> {
        let mut rows = HorizonRows::default();
        for path in self.parts(horizon_minutes)? {
            let part = read_part(&path)?;
            rows.features.extend(part.rows.features);
            rows.targets.extend(part.rows.targets);
        }
        Ok(rows)
    }
}

fn part_frame(part: &PartRows) -> PolarsResult<DataFrame> {
    let mut columns = Vec::with_capacity(FEATURE_COUNT + 2);
    columns.push(Int64Chunked::from_slice("origin_ms".into(), &part.origins_ms).into_column());
    for (feature, name) in FEATURE_NAMES.iter().enumerate() {
        columns.push(
            Float64Chunked::from_iter_values(
                (*name).into(),
                part.rows.features.iter().map(|row| row[feature]),
            )
            .into_column(),
        );
    }
    columns.push(Float64Chunked::from_slice("target".into(), &part.rows.targets).into_column());
    DataFrame::new(part.len(), columns)
}

fn open(path: &Path) -> Result<File, MatrixError> {
    File::open(path).map_err(|source| MatrixError::Io {
        context: "opening the matrix part",
        path: path.to_owned(),
        source,
    })
}

/// One part's rows.
pub fn read_part(path: &Path) -> Result<PartRows, MatrixError> {
    let polars = |source| MatrixError::Polars {
        context: "reading the matrix part",
        path: path.to_owned(),
        source,
    };
    let frame = ParquetReader::new(open(path)?).finish().map_err(polars)?;
    let height = frame.height();
    let origins_ms: Vec<i64> = frame
        .column("origin_ms")
        .and_then(Column::i64)
        .map_err(polars)?
        .iter()
        .map(|origin| origin.unwrap_or_default())
        .collect();
    let mut features = vec![[f64::NAN; FEATURE_COUNT]; height];
    for (feature, name) in FEATURE_NAMES.iter().enumerate() {
        let values = frame.column(name).and_then(Column::f64).map_err(polars)?;
        for (row, value) in features.iter_mut().zip(values.iter()) {
            row[feature] = value.unwrap_or(f64::NAN);
        }
    }
    let targets: Vec<f64> = frame
        .column("target")
        .and_then(Column::f64)
        .map_err(polars)?
        .iter()
        .map(|target| target.unwrap_or(f64::NAN))
        .collect();
    Ok(PartRows {
        origins_ms,
        rows: HorizonRows { features, targets },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_read_back_bit_for_bit_in_group_order() {
        let scratch = tempfile::tempdir().expect("scratch");
        let matrix = MatrixDir::new(scratch.path().join("m"));
        let row = |seed: f64| {
            let mut features = [0.0; FEATURE_COUNT];
            for (position, value) in features.iter_mut().enumerate() {
                *value = seed * 1e-7 + position as f64 / 3.0;
            }
            features[3] = f64::NAN;
            features
        };
        let mut first = PartRows::default();
        first.push(1_000, row(1.0), 0.25);
        first.push(2_000, row(2.0), 1.0 / 3.0);
        let mut second = PartRows::default();
        second.push(3_000, row(3.0), 0.75);
        // Written out of order, as parallel groups finish.
        matrix.write_part(30, 1, &second).expect("write");
        matrix.write_part(30, 0, &first).expect("write");
        matrix
            .write_part(60, 0, &PartRows::default())
            .expect("empty");
        let rows = matrix.read(30).expect("read");
        assert_eq!(rows.targets, vec![0.25, 1.0 / 3.0, 0.75]);
        for (read, written) in rows.features.iter().zip([row(1.0), row(2.0), row(3.0)]) {
            let bits = |row: &FeatureVector| row.map(f64::to_bits);
            assert_eq!(bits(read), bits(&written));
        }
        let part = read_part(&matrix.parts(30).expect("parts")[1]).expect("part");
        assert_eq!(
            (part.origins_ms, part.rows.targets),
            (vec![3_000], vec![0.75])
        );
        // The empty part wrote nothing: no folder for its horizon.
        assert_eq!(matrix.parts(30).expect("parts").len(), 2);
        assert!(matrix.parts(60).expect("parts").is_empty());
        assert!(matrix.read(60).expect("no part").targets.is_empty());
    }
}
