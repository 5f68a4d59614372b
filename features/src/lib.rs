//! The shared vocabulary of parkcast: the star schema, the calendar, personal-data hashing, and the
//! rules that turn sensor readings into slot and lot status.
//!
//! Training and serving both depend on this crate, so a rule written here means the same offline and
//! online. It is pure: no async runtime, no Kafka, no gRPC. DataFrame support (polars and the Parquet
//! [`warehouse`]) sits behind the `polars` cargo feature, which the trainer enables and the scoring
//! path does not need.
//!
//! ```
//! use parkcast_features::occupancy::{ApplyOutcome, SlotState, SlotStatus};
//! use parkcast_features::schema::Table;
//!
//! let mut slot = SlotState::default();
//! assert_eq!(slot.apply(1_000, 1, true), ApplyOutcome::Changed);
//! assert_eq!(slot.apply(500, 2, false), ApplyOutcome::OutOfOrder);
//! assert_eq!(slot.status_at(2_000, 60_000), SlotStatus::Occupied);
//! assert_eq!(Table::FactSlotStatus.partition_column(), Some("ts"));
//! ```

pub mod baseline;
pub mod calendar;
pub mod conformal;
pub mod grid;
#[cfg(feature = "polars")]
pub mod lots;
pub mod occupancy;
pub mod pii;
pub mod rows;
pub mod schema;
pub mod topology;
pub mod vector;
#[cfg(feature = "polars")]
pub mod warehouse;

pub use rows::TableRow;
pub use schema::{ColumnSpec, ColumnType, Table};
