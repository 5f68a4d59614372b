//! The fitted model: trees over raw feature values.
//!
//! Each split keeps the raw upper boundary of its bin, so prediction compares the row's value with
//! it (`value <= threshold` goes left) and never bins; NaN follows the split's default direction.
//! Serialized with serde; every number is an f64 or an integer, so a binary format that keeps f64
//! bits (MessagePack, bincode) reloads a model that predicts bit for bit the same. Deserializing
//! checks that the trees hold together, so a damaged file is an error, never a panic or a loop.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{GbmError, Objective, RowMajor};

/// An internal node. Children are node indices, or `!leaf` (negative) for leaves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Node {
    /// The column of the caller's rows it reads.
    pub(crate) column: u32,
    /// Values `<=` this go left.
    pub(crate) threshold: f64,
    /// Child for values at or below the threshold.
    pub(crate) left: i32,
    /// Child for values above the threshold.
    pub(crate) right: i32,
    /// Where NaN goes: learned from the training rows with NaN at this node, or the side that
    /// held more training rows when there were none.
    pub(crate) default_left: bool,
}

/// One tree: internal nodes (the root first, when there is one) and leaf outputs, the learning
/// rate already applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Tree {
    pub(crate) nodes: Vec<Node>,
    pub(crate) leaves: Vec<f64>,
}

impl Tree {
    /// The tree's output for a row with at least as many values as the model has columns.
    #[inline]
    fn predict(&self, row: &[f64]) -> f64 {
        if self.nodes.is_empty() {
            return self.leaves.first().copied().unwrap_or(0.0);
        }
        let mut next = 0i32;
        while next >= 0 {
            // Checked on load: indices are in range and children come after their parent.
            let node = &self.nodes[next as usize];
            let value = row[node.column as usize];
            let left = if value.is_nan() {
                node.default_left
            } else {
                value <= node.threshold
            };
            next = if left { node.left } else { node.right };
        }
        self.leaves[!next as usize]
    }

    /// Children after their parent (so every walk ends), indices in range, columns in range.
    fn check(&self, columns: usize) -> Result<(), GbmError> {
        let inconsistent = |reason| Err(GbmError::InconsistentModel { reason });
        if self.leaves.len() != self.nodes.len() + 1 {
            return inconsistent("a tree needs one leaf more than internal nodes");
        }
        for (index, node) in self.nodes.iter().enumerate() {
            if node.column as usize >= columns {
                return inconsistent("a split reads a column beyond the model's");
            }
            for child in [node.left, node.right] {
                let valid = if child >= 0 {
                    child as usize > index && (child as usize) < self.nodes.len()
                } else {
                    (!child as usize) < self.leaves.len()
                };
                if !valid {
                    return inconsistent("a child index is out of order or range");
                }
            }
        }
        Ok(())
    }
}

/// Gradient-boosted trees fitted by [`GbmValidParams::fit`](crate::GbmValidParams::fit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ModelData")]
pub struct GbmModel {
    columns: usize,
    objective: Objective,
    init_score: f64,
    trees: Vec<Tree>,
}

/// What a serialized model holds before it is checked.
#[derive(Deserialize)]
struct ModelData {
    columns: usize,
    objective: Objective,
    init_score: f64,
    trees: Vec<Tree>,
}

impl TryFrom<ModelData> for GbmModel {
    type Error = GbmError;

    fn try_from(data: ModelData) -> Result<Self, Self::Error> {
        for tree in &data.trees {
            tree.check(data.columns)?;
        }
        Ok(GbmModel {
            columns: data.columns,
            objective: data.objective,
            init_score: data.init_score,
            trees: data.trees,
        })
    }
}

/// Rows per parallel task when predicting many rows.
const PREDICT_CHUNK: usize = 512;

impl GbmModel {
    pub(crate) fn new(
        columns: usize,
        objective: Objective,
        init_score: f64,
        trees: Vec<Tree>,
    ) -> Self {
        GbmModel {
            columns,
            objective,
            init_score,
            trees,
        }
    }

    /// The prediction for one row: the initial score plus every tree's output. Walks raw
    /// thresholds, allocates nothing. A row shorter than the training rows gives NaN.
    pub fn predict_one(&self, row: &[f64]) -> f64 {
        if row.len() < self.columns {
            return f64::NAN;
        }
        self.trees
            .iter()
            .fold(self.init_score, |sum, tree| sum + tree.predict(row))
    }

    /// Predictions for many rows, in parallel over blocks of rows (on the calling thread for up to
    /// 512 rows). Rows narrower than the training
    /// rows give NaN.
    pub fn predict(&self, rows: RowMajor<'_>) -> Vec<f64> {
        if rows.columns() < self.columns {
            return vec![f64::NAN; rows.rows()];
        }
        let width = rows.columns();
        let mut out = vec![self.init_score; rows.rows()];
        let block = |(out, values): (&mut [f64], &[f64])| {
            // Tree by tree over the block: one tree's nodes stay in cache for every row.
            for tree in &self.trees {
                for (sum, row) in out.iter_mut().zip(values.chunks_exact(width)) {
                    *sum += tree.predict(row);
                }
            }
        };
        if rows.rows() <= PREDICT_CHUNK {
            // A few rows (a server scoring one lot): no hand-over to the thread pool.
            block((&mut out, rows.values()));
        } else {
            out.par_chunks_mut(PREDICT_CHUNK)
                .zip(rows.values().par_chunks(PREDICT_CHUNK * width))
                .for_each(block);
        }
        out
    }

    /// The model made of the first `trees` trees only: what fitting with that many rounds would
    /// have given (the fit is deterministic and each tree depends only on the ones before), so a
    /// search over the number of rounds fits once and scores prefixes.
    pub fn prefix(&self, trees: usize) -> GbmModel {
        GbmModel {
            columns: self.columns,
            objective: self.objective,
            init_score: self.init_score,
            trees: self.trees[..trees.min(self.trees.len())].to_vec(),
        }
    }

    /// Columns of the training rows.
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// The objective it was fitted with.
    pub fn objective(&self) -> Objective {
        self.objective
    }

    /// The constant every prediction starts from.
    pub fn init_score(&self) -> f64 {
        self.init_score
    }

    /// Number of trees (boosting may stop before the rounds asked for when nothing can split).
    pub fn tree_count(&self) -> usize {
        self.trees.len()
    }

    /// Leaves over all trees.
    pub fn leaf_count(&self) -> usize {
        self.trees.iter().map(|tree| tree.leaves.len()).sum()
    }

    /// How often each column is split on, over all trees (a rough importance).
    pub fn split_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.columns];
        for node in self.trees.iter().flat_map(|tree| &tree.nodes) {
            if let Some(count) = counts.get_mut(node.column as usize) {
                *count += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stump(left: i32, right: i32, column: u32) -> ModelData {
        ModelData {
            columns: 2,
            objective: Objective::L2,
            init_score: 0.5,
            trees: vec![Tree {
                nodes: vec![Node {
                    column,
                    threshold: 1.0,
                    left,
                    right,
                    default_left: true,
                }],
                leaves: vec![-1.0, 1.0],
            }],
        }
    }

    #[test]
    fn loading_checks_that_trees_hold_together() {
        let model = GbmModel::try_from(stump(!0, !1, 1)).expect("a valid stump");
        assert_eq!(model.predict_one(&[0.0, 0.5]), -0.5);
        assert_eq!(model.predict_one(&[0.0, 2.0]), 1.5);
        assert_eq!(model.predict_one(&[0.0, f64::NAN]), -0.5);
        assert!(model.predict_one(&[0.0]).is_nan(), "a short row gives NaN");
        for (data, case) in [
            (stump(0, !1, 1), "a node pointing at itself would loop"),
            (stump(!0, !2, 1), "a leaf out of range"),
            (stump(!0, 1, 1), "a node out of range"),
            (stump(!0, !1, 2), "a column beyond the model's"),
        ] {
            assert!(
                matches!(
                    GbmModel::try_from(data),
                    Err(GbmError::InconsistentModel { .. })
                ),
                "{case}"
            );
        }
    }
}
