//! Progress reporting without a terminal dependency.
//!
//! Long jobs (simulation, imports, training, the ETL) report through [`Progress`]; the CLI implements it with progress
//! bars, tests pass [`NoProgress`]. Implementations must be cheap to call from several threads.

/// Receives progress of a long job.
pub trait Progress: Sync {
    /// Starts a stage with a name and, if known, the number of units it will take.
    fn stage(&self, name: &str, total: Option<u64>);
    /// Reports `units` more done in the current stage.
    fn advance(&self, units: u64);
}

/// Ignores progress.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _name: &str, _total: Option<u64>) {}
    fn advance(&self, _units: u64) {}
}
