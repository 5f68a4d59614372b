//! The warehouse: the star schema as typed rows, stored as hive-partitioned Parquet, and what the
//! trainer and the server read from it.
//!
//! The modules depend one way: [`schema`] (tables, column types, the [`TableRow`] trait) and
//! [`error`] are leaves; [`frame`] converts rows to and from polars frames; [`rows`] defines every
//! table's row type; [`store`] is the [`Warehouse`] on disk; [`progress`] is how long jobs that
//! write it report. Built on them: [`topology`] (which slots
//! each lot has, from `dim_slot`), [`lots`] (a source's lots on the forecast grid, as the trainer and
//! the server's history seeding read them), [`split`] (a source's facts split by lot group into scratch
//! files, so a trainer's passes read only their group) and [`pii`] (how contact data and plates are hashed before
//! they are stored).
//!
//! ```
//! use parkcast_warehouse::schema::Table;
//!
//! assert_eq!(Table::FactSlotStatus.partition_column(), Some("ts"));
//! assert_eq!(Table::from_name("dim_lot"), Some(Table::DimLot));
//! ```

pub mod error;
pub mod frame;
pub mod lots;
pub mod pii;
pub mod progress;
pub mod rows;
pub mod schema;
pub mod split;
pub mod store;
pub mod topology;

pub use error::{Result, WarehouseError};
pub use frame::{FrameRow, PolarsValue, polars_type};
pub use schema::{ColumnSpec, ColumnType, FORMAT_VERSION, Table, TableRow};
pub use store::{
    TableSummary, Warehouse, WriteStats, by_partition_date, partition_date_of, polars_schema,
};
