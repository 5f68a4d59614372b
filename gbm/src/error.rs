//! The crate's one error type.

/// Why parameters were refused or a fit could not start.
///
/// Every variant is raised before any tree is grown: [`crate::GbmParams::check`] refuses invalid
/// hyperparameters and the fit refuses inconsistent inputs, so the algorithm itself never fails.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GbmError {
    /// A hyperparameter is out of range.
    #[error("invalid hyperparameter {name}: {reason}")]
    InvalidParam {
        /// The parameter.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The feature matrix has no column.
    #[error("the feature matrix needs at least one column")]
    NoColumns,
    /// The values do not fill whole rows.
    #[error("{values} values do not fill rows of {columns} columns")]
    RaggedRows {
        /// Number of values given.
        values: usize,
        /// Columns per row.
        columns: usize,
    },
    /// No training rows.
    #[error("no training rows")]
    NoRows,
    /// More rows than the row index type holds.
    #[error("{rows} rows: at most {max} are supported")]
    TooManyRows {
        /// Rows given.
        rows: usize,
        /// The limit.
        max: usize,
    },
    /// Targets (or weights) and rows disagree in number.
    #[error("{what}: {found} values for {expected} rows")]
    LengthMismatch {
        /// `targets` or `weights`.
        what: &'static str,
        /// Rows in the feature matrix.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// A target is NaN or infinite.
    #[error("target of row {row} is not finite")]
    NonFiniteTarget {
        /// The row.
        row: usize,
    },
    /// A weight is negative, NaN or infinite.
    #[error("weight of row {row} is not a finite non-negative number")]
    InvalidWeight {
        /// The row.
        row: usize,
    },
    /// All weights are zero.
    #[error("the weights sum to zero")]
    ZeroWeight,
    /// A model read back does not hold together (a child index out of range, a feature beyond the
    /// columns): it was not written by this crate or was damaged.
    #[error("inconsistent model: {reason}")]
    InconsistentModel {
        /// What is wrong.
        reason: &'static str,
    },
}
