//! Where the real public data sets live.
//!
//! They are kept beside the repository, in `../shared/datasets/` (never copied into it). The
//! `PARKCAST_DATASETS` environment variable points elsewhere. The names below are the one place
//! that knows each data set's files.

use std::path::{Path, PathBuf};

use parkcast_warehouse::Warehouse;
use parkcast_warehouse::schema::Table;

use crate::import::{ImportError, ImportSource, import};
use crate::progress::NoProgress;

/// The folder holding `birmingham/`, `malaga/` and `melbourne/`.
pub fn datasets_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PARKCAST_DATASETS") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
        .join("shared")
        .join("datasets")
}

/// Birmingham's car parks, under [`datasets_dir`].
pub const BIRMINGHAM_CSV: &str = "birmingham/parking_birmingham.csv";
/// Málaga's free spaces, under [`datasets_dir`].
pub const MALAGA_FREE_SPACES_CSV_GZ: &str = "malaga/free_spaces_long.csv.gz";
/// Málaga's car parks, under [`datasets_dir`].
pub const MALAGA_LOTS_CSV: &str = "malaga/lots.csv";
/// Melbourne's bay events of 12 June 2014, under [`datasets_dir`].
pub const MELBOURNE_EVENTS_CSV: &str = "melbourne/bay_events_2014-06-12.csv";
/// Melbourne's bay locations, under [`datasets_dir`].
pub const MELBOURNE_LOCATIONS_JSON: &str = "melbourne/bay_locations.json";

/// The three real data sets as `parkcast import all` imports them (Melbourne on a 5-minute grid).
pub fn all() -> Vec<ImportSource> {
    vec![birmingham(None), malaga(None, None), melbourne(5)]
}

/// Birmingham, from `csv` or the data set's own file.
pub fn birmingham(csv: Option<PathBuf>) -> ImportSource {
    ImportSource::Birmingham {
        csv: csv.unwrap_or_else(|| datasets_dir().join(BIRMINGHAM_CSV)),
    }
}

/// Málaga, from the given files or the data set's own.
pub fn malaga(free_spaces_csv_gz: Option<PathBuf>, lots_csv: Option<PathBuf>) -> ImportSource {
    let data = datasets_dir();
    ImportSource::Malaga {
        free_spaces_csv_gz: free_spaces_csv_gz
            .unwrap_or_else(|| data.join(MALAGA_FREE_SPACES_CSV_GZ)),
        lots_csv: lots_csv.unwrap_or_else(|| data.join(MALAGA_LOTS_CSV)),
    }
}

/// The Melbourne day rolled up on an `interval_minutes` grid.
pub fn melbourne(interval_minutes: u32) -> ImportSource {
    melbourne_from(None, None, interval_minutes)
}

/// The Melbourne day from the given files or the data set's own, on an `interval_minutes` grid.
pub fn melbourne_from(
    events_csv: Option<PathBuf>,
    locations_json: Option<PathBuf>,
    interval_minutes: u32,
) -> ImportSource {
    let data = datasets_dir();
    ImportSource::Melbourne {
        events_csv: events_csv.unwrap_or_else(|| data.join(MELBOURNE_EVENTS_CSV)),
        locations_json: locations_json.unwrap_or_else(|| data.join(MELBOURNE_LOCATIONS_JSON)),
        interval_minutes,
    }
}

/// A warehouse at `path` holding the Melbourne day (15-minute grid), imported unless it is there
/// already: what replays of a real day and the streaming benchmarks run on.
pub fn melbourne_day(path: &Path) -> Result<Warehouse, ImportError> {
    if let Ok(warehouse) = Warehouse::open(path)
        && warehouse.has_table(Table::FactSlotStatus)
    {
        return Ok(warehouse);
    }
    let warehouse = Warehouse::create(path)?;
    import(&melbourne(15), &warehouse, &NoProgress)?;
    Ok(warehouse)
}
