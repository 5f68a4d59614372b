//! Progress reporting without a terminal dependency: the trait lives in the warehouse crate, which
//! every long job (simulation, imports, training, the ETL) already depends on.

pub use parkcast_warehouse::progress::{NoProgress, Progress};
