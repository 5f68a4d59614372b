//! Plumbing the adapters share: opening CSV files with progress, finding header columns, reading
//! fields with errors that name line and column, and writing the dimension tables of a source.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use parkcast_features::calendar::{
    CalendarFile, CalendarSource, read_warehouse_calendars, warehouse_calendar_path,
};
use parkcast_warehouse::rows::{CalendarRow, ZoneRow};
use parkcast_warehouse::{FrameRow, Warehouse, WriteStats};
use parkcast_warehouse::{Table, TableRow};

use super::ImportError;
use crate::progress::Progress;

/// Buffer of the CSV readers; large reads keep the progress callbacks rare.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Reports the bytes read through it as progress.
pub(crate) struct ProgressReader<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<'a, R> ProgressReader<'a, R> {
    pub(crate) fn new(inner: R, progress: &'a dyn Progress) -> Self {
        ProgressReader { inner, progress }
    }
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.progress.advance(read as u64);
        Ok(read)
    }
}

/// Opens a file for reading, starting a progress stage measured in bytes of the file.
pub(crate) fn open_with_progress<'a>(
    path: &Path,
    stage: &str,
    progress: &'a dyn Progress,
) -> Result<ProgressReader<'a, BufReader<File>>, ImportError> {
    let file = File::open(path).map_err(io_error(path))?;
    let bytes = file.metadata().map_err(io_error(path))?.len();
    progress.stage(stage, Some(bytes));
    Ok(ProgressReader::new(
        BufReader::with_capacity(READ_BUFFER_BYTES, file),
        progress,
    ))
}

/// A CSV reader over any byte stream: headers on, quotes on, `\n` or `\r\n` line ends, and
/// flexible field counts so that a short or long row is reported with its line by the adapter.
pub(crate) fn csv_reader<R: Read>(input: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .buffer_capacity(READ_BUFFER_BYTES)
        .from_reader(input)
}

/// Wraps an IO error with the file it happened on.
pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError {
    let owned_path = path.to_path_buf();
    move |source| ImportError::Io {
        path: owned_path,
        source,
    }
}

/// Converts an error of the csv reader: IO stays IO; anything else is a malformed record.
pub(crate) fn csv_error(path: &Path, error: csv::Error) -> ImportError {
    let line = error.position().map_or(0, csv::Position::line);
    let message = error.to_string();
    match error.into_kind() {
        csv::ErrorKind::Io(source) => ImportError::Io {
            path: path.to_path_buf(),
            source,
        },
        _ => ImportError::Malformed {
            path: path.to_path_buf(),
            line,
            column: "(record)".to_owned(),
            message,
        },
    }
}

/// The header of a CSV file: trimmed, compared ignoring ASCII case, the UTF-8 byte-order mark of the
/// first name removed (spreadsheets write one).
pub(crate) struct Header {
    path: PathBuf,
    names: Vec<String>,
}

impl Header {
    /// Reads the header row of `reader`.
    pub(crate) fn read<R: Read>(
        path: &Path,
        reader: &mut csv::Reader<R>,
    ) -> Result<Self, ImportError> {
        let record = reader
            .byte_headers()
            .map_err(|error| csv_error(path, error))?;
        let mut names = Vec::with_capacity(record.len());
        for (index, field) in record.iter().enumerate() {
            let without_bom = if index == 0 {
                field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field)
            } else {
                field
            };
            let name = std::str::from_utf8(without_bom).map_err(|_| ImportError::Malformed {
                path: path.to_path_buf(),
                line: 1,
                column: format!("(field {})", index + 1),
                message: "the header is not valid UTF-8".to_owned(),
            })?;
            names.push(name.trim().to_owned());
        }
        Ok(Header {
            path: path.to_path_buf(),
            names,
        })
    }

    /// The index of a column, if the header has it.
    pub(crate) fn find(&self, column: &str) -> Option<usize> {
        self.names
            .iter()
            .position(|name| name.eq_ignore_ascii_case(column))
    }

    /// The index of a column the format requires.
    pub(crate) fn require(&self, column: &str) -> Result<usize, ImportError> {
        self.find(column).ok_or_else(|| ImportError::MissingColumn {
            path: self.path.clone(),
            column: column.to_owned(),
        })
    }

    /// Number of columns.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }
}

/// One data record with what is needed to report an error in it.
pub(crate) struct Record<'a> {
    path: &'a Path,
    /// 1-based line where the record starts.
    pub(crate) line: u64,
    fields: &'a csv::ByteRecord,
    header: &'a Header,
}

impl<'a> Record<'a> {
    /// Checks the field count against the header: every row must have one field per header column.
    pub(crate) fn new(
        path: &'a Path,
        fields: &'a csv::ByteRecord,
        header: &'a Header,
    ) -> Result<Self, ImportError> {
        let line = fields.position().map_or(0, csv::Position::line);
        let record = Record {
            path,
            line,
            fields,
            header,
        };
        if fields.len() != header.len() {
            let column = if fields.len() < header.len() {
                header.names[fields.len()].clone()
            } else {
                format!("(field {})", header.len() + 1)
            };
            return Err(record.malformed_at(
                column,
                format!(
                    "expected {} fields as in the header, found {}",
                    header.len(),
                    fields.len()
                ),
            ));
        }
        Ok(record)
    }

    /// A malformed-value error for the column at `index`.
    pub(crate) fn malformed(&self, index: usize, message: impl Into<String>) -> ImportError {
        self.malformed_at(self.header.names[index].clone(), message)
    }

    fn malformed_at(&self, column: String, message: impl Into<String>) -> ImportError {
        ImportError::Malformed {
            path: self.path.to_path_buf(),
            line: self.line,
            column,
            message: message.into(),
        }
    }

    /// The field at `index` as text, trimmed.
    pub(crate) fn text(&self, index: usize) -> Result<&'a str, ImportError> {
        let field = self
            .fields
            .get(index)
            .expect("the field count should have been checked against the header");
        std::str::from_utf8(field)
            .map(str::trim)
            .map_err(|_| self.malformed(index, "not valid UTF-8"))
    }

    /// The field at `index` as a non-empty text.
    pub(crate) fn required_text(&self, index: usize) -> Result<&'a str, ImportError> {
        let text = self.text(index)?;
        if text.is_empty() {
            return Err(self.malformed(index, "empty value"));
        }
        Ok(text)
    }

    /// The field at `index` as an integer.
    pub(crate) fn integer(&self, index: usize) -> Result<i32, ImportError> {
        let text = self.text(index)?;
        text.parse()
            .map_err(|_| self.malformed(index, format!("{text:?} is not an integer")))
    }
}

/// What identifies a source in the warehouse.
#[derive(Debug, Clone)]
pub(crate) struct SourceSite {
    /// Writer name, id prefix and `source` column.
    pub(crate) writer: String,
    /// Id of the source's one zone.
    pub(crate) zone_id: String,
    /// Name of the zone.
    pub(crate) zone_name: String,
    /// The city.
    pub(crate) city: String,
    /// Time zone of the lots.
    pub(crate) timezone: Tz,
    /// Holiday region of the lots, if known.
    pub(crate) holiday_region: Option<String>,
    /// The calendar file the import was given (`--calendar-file`), kept in the warehouse with the
    /// source's tables.
    pub(crate) calendar_file: Option<CalendarFile>,
}

impl SourceSite {
    /// The one `dim_zone` row of the source.
    pub(crate) fn zone_row(&self) -> ZoneRow {
        ZoneRow {
            zone_id: self.zone_id.clone(),
            name: self.zone_name.clone(),
            city: self.city.clone(),
            timezone: self.timezone.name().to_owned(),
            source: self.writer.clone(),
        }
    }

    /// The `dim_lot.holiday_region` value: empty when unknown (the column is not nullable).
    pub(crate) fn holiday_region_text(&self) -> String {
        self.holiday_region.clone().unwrap_or_default()
    }

    /// The calendars this import sees: the embedded data, with the calendar files other imports
    /// kept in the warehouse and this import's own file applied (a file this source kept earlier is
    /// replaced by the one given now, or dropped if none is).
    pub(crate) fn calendar_source(
        &self,
        warehouse: &Warehouse,
    ) -> Result<CalendarSource, ImportError> {
        let own_path = warehouse_calendar_path(warehouse.root(), &self.writer);
        let others = read_warehouse_calendars(warehouse.root())?
            .into_iter()
            .filter(|file| Path::new(file.origin()) != own_path);
        let mut source = CalendarSource::embedded();
        for file in others.chain(self.calendar_file.clone()) {
            source = source.with_file(&file)?;
        }
        Ok(source)
    }

    /// Fails early, before a long read, if the holiday region is not known to the calendars this
    /// import sees.
    pub(crate) fn check_calendar(&self, warehouse: &Warehouse) -> Result<(), ImportError> {
        if let Some(region) = &self.holiday_region {
            self.calendar_source(warehouse)?.check_region(region)?;
        }
        Ok(())
    }

    /// Calendar rows of the region for the local dates from `first` to `last`, if the region is known.
    pub(crate) fn calendar_rows(
        &self,
        warehouse: &Warehouse,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
    ) -> Result<Option<Vec<CalendarRow>>, ImportError> {
        let Some(region) = &self.holiday_region else {
            return Ok(None);
        };
        let calendar = self.calendar_source(warehouse)?.load(region)?;
        Ok(Some(parkcast_warehouse::rows::calendar_rows(
            &calendar,
            self.local_date(first),
            self.local_date(last),
        )))
    }

    /// The local date of an instant.
    pub(crate) fn local_date(&self, instant: DateTime<Utc>) -> NaiveDate {
        instant.with_timezone(&self.timezone).date_naive()
    }
}

/// Writes tables of one import, remembering what each write produced.
pub(crate) struct TableWriter<'a> {
    warehouse: &'a Warehouse,
    writer: &'a str,
    progress: &'a dyn Progress,
    written: Vec<(Table, WriteStats)>,
}

impl<'a> TableWriter<'a> {
    /// Starts the writing stage; `tables` is how many writes will follow.
    pub(crate) fn new(
        warehouse: &'a Warehouse,
        writer: &'a str,
        tables: u64,
        progress: &'a dyn Progress,
    ) -> Self {
        progress.stage("writing the warehouse", Some(tables));
        TableWriter {
            warehouse,
            writer,
            progress,
            written: Vec::new(),
        }
    }

    /// Replaces the writer's rows of the table of `R`.
    pub(crate) fn replace<R: FrameRow>(&mut self, rows: &[R]) -> Result<(), ImportError> {
        let stats = self.warehouse.replace::<R>(self.writer, rows)?;
        self.written.push((R::TABLE, stats));
        self.progress.advance(1);
        Ok(())
    }

    /// Writes the calendar, or, without a holiday region, removes the calendar an earlier import of
    /// the same writer may have left, so that a re-import never keeps stale rows. Keeps the import's
    /// calendar file in the warehouse (`calendars/<writer>.csv`) for the trainer, or removes the one
    /// an earlier import of the writer kept.
    pub(crate) fn replace_calendar(
        &mut self,
        rows: Option<Vec<CalendarRow>>,
        calendar_file: Option<&CalendarFile>,
    ) -> Result<(), ImportError> {
        let path = warehouse_calendar_path(self.warehouse.root(), self.writer);
        match calendar_file {
            Some(file) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
                }
                file.write(&path)?;
            }
            None if path.exists() => std::fs::remove_file(&path).map_err(io_error(&path))?,
            None => {}
        }
        match rows {
            Some(rows) => self.replace(&rows),
            None => {
                if self.warehouse.has_table(CalendarRow::TABLE) {
                    self.warehouse
                        .clear_writer(CalendarRow::TABLE, self.writer)?;
                }
                self.progress.advance(1);
                Ok(())
            }
        }
    }

    /// What was written.
    pub(crate) fn finish(self) -> Vec<(Table, WriteStats)> {
        self.written
    }
}

/// Dense indices for the keys (lot or bay names) of a source, in order of first appearance.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    indices: HashMap<String, u32>,
    keys: Vec<String>,
}

impl KeyIndex {
    /// The index of `key`, adding it if new.
    pub(crate) fn index_of(&mut self, key: &str) -> u32 {
        if let Some(index) = self.indices.get(key) {
            return *index;
        }
        let index = u32::try_from(self.keys.len())
            .expect("a source should have fewer than 2^32 lots or bays");
        self.indices.insert(key.to_owned(), index);
        self.keys.push(key.to_owned());
        index
    }

    /// The keys, by index.
    pub(crate) fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// Lowercase ASCII slug: letters and digits kept, every other run of characters becomes one `-`.
pub(crate) fn slug(text: &str) -> String {
    let mut slug = String::with_capacity(text.len());
    for character in text.chars() {
        if character.is_ascii_alphanumeric() {
            slug.push(character.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    while slug.ends_with('-') {
        slug.pop();
    }
    slug
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_keep_letters_and_digits_and_collapse_the_rest() {
        assert_eq!(slug("A'BECKETT STREET"), "a-beckett-street");
        assert_eq!(slug("  Lt LONSDALE  street-- "), "lt-lonsdale-street");
        assert_eq!(slug("Málaga 2"), "m-laga-2");
        assert_eq!(slug(""), "");
    }
}
