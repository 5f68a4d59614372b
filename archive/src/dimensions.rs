//! The dimension tables an archive warehouse needs before the archiver appends facts to it.
//!
//! The archiver writes only facts (what the topics carry). Training on the archive also needs the
//! lots, slots, zones, calendar and events of the warehouse the live system serves, and the user
//! calendar files its imports kept, so both see the same calendars.

use std::path::PathBuf;

use parkcast_features::calendar::{CalendarError, USER_CALENDAR_DIR, read_warehouse_calendars};
use parkcast_warehouse::rows::{CalendarRow, EventRow, LotRow, SlotRow, ZoneRow};
use parkcast_warehouse::schema::Table;
use parkcast_warehouse::{Warehouse, WarehouseError};

/// The writer name of the copied dimension files.
const WRITER: &str = "archive-dims";

/// Errors of copying dimensions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DimensionsError {
    /// A table could not be read or written.
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    /// A kept calendar file could not be read or written.
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    /// The calendar folder could not be created.
    #[error("creating {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Copies every dimension table of `from` into `to`, replacing what `to` held, and the calendar
/// files `from`'s imports kept.
pub fn copy_dimensions(from: &Warehouse, to: &Warehouse) -> Result<(), DimensionsError> {
    to.replace(WRITER, &from.read_rows::<LotRow>()?)?;
    to.replace(WRITER, &from.read_rows::<SlotRow>()?)?;
    if from.has_table(Table::DimZone) {
        to.replace(WRITER, &from.read_rows::<ZoneRow>()?)?;
    }
    if from.has_table(Table::DimCalendar) {
        to.replace(WRITER, &from.read_rows::<CalendarRow>()?)?;
    }
    if from.has_table(Table::DimEvent) {
        to.replace(WRITER, &from.read_rows::<EventRow>()?)?;
    }
    let calendars = read_warehouse_calendars(from.root())?;
    if calendars.is_empty() {
        return Ok(());
    }
    let folder = to.root().join(USER_CALENDAR_DIR);
    std::fs::create_dir_all(&folder).map_err(|source| DimensionsError::Io {
        path: folder.clone(),
        source,
    })?;
    for file in calendars {
        let Some(name) = std::path::Path::new(file.origin()).file_name() else {
            continue;
        };
        file.write(&folder.join(name))?;
    }
    Ok(())
}
