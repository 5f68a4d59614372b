//! The offline side of parkcast: build the warehouse (simulate a city, import real data), backtest
//! baselines and learned forecasters with rolling origins, and publish versioned model artifacts.
//!
//! ```no_run
//! use parkcast_warehouse::Warehouse;
//! use parkcast_training::progress::NoProgress;
//! use parkcast_training::simulate::{simulate, SimulationParams};
//!
//! let warehouse = Warehouse::create("/tmp/city")?;
//! let params = SimulationParams::default().lots(10).days(7).check()?;
//! let report = simulate(&params, &warehouse, &NoProgress)?;
//! println!("{} sessions", report.sessions);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod backtest;
pub mod datasets;
pub mod frozen;
pub mod gate;
pub mod groups;
pub mod import;
pub mod matrix;
mod pairs;
pub mod plot;
pub mod price;
pub mod prior;
pub mod progress;
pub mod protocol;
pub mod shards;
pub mod simulate;
pub mod summary;
pub mod train;
pub mod tune;

/// The model types, model files and registry live in `parkcast-inference` (shared with serving).
pub use parkcast_inference::{artifact, model, registry};
