//! The forecasting vocabulary of parkcast: the calendar, the rules that turn sensor readings into
//! slot and lot status, the forecast grid, the feature vectors, the baselines and the conformal
//! intervals.
//!
//! Training and serving both depend on this crate, so a rule written here means the same offline and
//! online. It is pure: no async runtime, no Kafka, no gRPC, no storage (the star schema and its
//! Parquet files are `parkcast-warehouse`). The batch path of the feature vectors
//! ([`vector::batch`], polars expressions) sits behind the `polars` cargo feature, which the trainer
//! enables and the scoring path does not need.
//!
//! ```
//! use parkcast_features::occupancy::{ApplyOutcome, SlotState, SlotStatus};
//!
//! let mut slot = SlotState::default();
//! assert_eq!(slot.apply(1_000, 1, true), ApplyOutcome::Changed);
//! assert_eq!(slot.apply(500, 2, false), ApplyOutcome::OutOfOrder);
//! assert_eq!(slot.status_at(2_000, 60_000), SlotStatus::Occupied);
//! ```

pub mod baseline;
pub mod calendar;
pub mod conformal;
pub mod grid;
pub mod occupancy;
pub mod vector;
