//! Where the real public data sets live.
//!
//! They are kept beside the repository, in `../shared/datasets/` (never copied into it). The
//! `PARKCAST_DATASETS` environment variable points elsewhere.

use std::path::PathBuf;

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
