//! What the trainer's integration tests share.

use parkcast_training::datasets::datasets_dir;
use parkcast_training::import::{ImportSource, import};
use parkcast_training::progress::NoProgress;
use parkcast_warehouse::Warehouse;

/// A fresh warehouse holding the real Birmingham data set (`../shared/datasets`), in a temporary
/// folder that lives as long as the returned guard.
pub fn birmingham_warehouse() -> (tempfile::TempDir, Warehouse) {
    let dir = tempfile::tempdir().expect("temp dir");
    let warehouse = Warehouse::create(dir.path()).expect("warehouse");
    let source = ImportSource::Birmingham {
        csv: datasets_dir().join("birmingham/parking_birmingham.csv"),
    };
    import(&source, &warehouse, &NoProgress).expect("the Birmingham import should succeed");
    (dir, warehouse)
}
