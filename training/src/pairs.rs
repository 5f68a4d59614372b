//! A group's scored pairs kept on disk between the two passes over a test window.
//!
//! The test window is read twice: once to collect the residuals that join the calibration as their
//! targets become known, and once to score every pair against the intervals its origin read from
//! that calibration. Scoring the window again (reading the group, building its features, running
//! every model) was a third of the scoring time; the pairs and forecasts of a group are instead
//! written here by the first pass and read back by the second, one group at a time, so memory stays
//! that of a group.
//!
//! The format is this run's own, fixed-width little-endian records: a header (forecasters `u32`,
//! rows `u64`), then per row `lot` (`u32`), `horizon_steps` (`u32`), `target_ms` (`i64`),
//! `actual_rate`, `capacity`, `last_rate` (`f64`), the day type ([`DayType::index`], `u8`),
//! `holiday` (`u8`) and one `f64` forecast per forecaster. Values come back bit for bit.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use parkcast_features::calendar::DayType;

use crate::backtest::{EvalRow, ScoredPart};

/// Bytes of a row before its forecasts.
const ROW_BYTES: usize = 4 + 4 + 8 + 8 + 8 + 8 + 1 + 1;

/// Writes a group's scored pairs to `path`.
pub(crate) fn write(path: &Path, part: &ScoredPart) -> std::io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    out.write_all(&(part.forecasts.len() as u32).to_le_bytes())?;
    out.write_all(&(part.rows.len() as u64).to_le_bytes())?;
    for (position, row) in part.rows.iter().enumerate() {
        // Lot codes count a city's lots, far below u32::MAX.
        out.write_all(&(row.lot as u32).to_le_bytes())?;
        out.write_all(&row.horizon_steps.to_le_bytes())?;
        out.write_all(&row.target_ms.to_le_bytes())?;
        for value in [row.actual_rate, row.capacity, row.last_rate] {
            out.write_all(&value.to_le_bytes())?;
        }
        out.write_all(&[row.day_type.index() as u8, u8::from(row.holiday)])?;
        for forecasts in &part.forecasts {
            out.write_all(&forecasts[position].to_le_bytes())?;
        }
    }
    out.into_inner()
        .map_err(|error| error.into_error())?
        .sync_data()
}

/// Reads back what [`write`] wrote.
pub(crate) fn read(path: &Path) -> std::io::Result<ScoredPart> {
    let mut input = BufReader::new(File::open(path)?);
    let mut header = [0u8; 12];
    input.read_exact(&mut header)?;
    let models = u32::from_le_bytes(take(&header[..4])) as usize;
    let rows = u64::from_le_bytes(take(&header[4..])) as usize;
    let width = ROW_BYTES + 8 * models;
    let mut body = Vec::new();
    input.read_to_end(&mut body)?;
    if body.len() != rows * width {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{}: {} bytes for {rows} rows of {width}",
                path.display(),
                body.len()
            ),
        ));
    }
    let mut part = ScoredPart {
        rows: Vec::with_capacity(rows),
        forecasts: vec![Vec::with_capacity(rows); models],
    };
    for record in body.chunks_exact(width) {
        let f64_at = |offset: usize| f64::from_le_bytes(take(&record[offset..offset + 8]));
        part.rows.push(EvalRow {
            lot: u32::from_le_bytes(take(&record[0..4])) as usize,
            horizon_steps: u32::from_le_bytes(take(&record[4..8])),
            target_ms: i64::from_le_bytes(take(&record[8..16])),
            actual_rate: f64_at(16),
            capacity: f64_at(24),
            last_rate: f64_at(32),
            day_type: DayType::ALL
                .get(usize::from(record[40]))
                .copied()
                .unwrap_or(DayType::Weekday),
            holiday: record[41] != 0,
        });
        for (model, forecasts) in part.forecasts.iter_mut().enumerate() {
            forecasts.push(f64_at(ROW_BYTES + 8 * model));
        }
    }
    Ok(part)
}

/// The first `N` bytes of a slice known to hold them.
fn take<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut array = [0u8; N];
    array.copy_from_slice(&bytes[..N]);
    array
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scored_pairs_come_back_bit_for_bit() {
        let rows: Vec<EvalRow> = (0..50)
            .map(|index| EvalRow {
                lot: index % 7,
                horizon_steps: index as u32 * 3,
                target_ms: 1_700_000_000_000 + index as i64 * 300_000,
                actual_rate: index as f64 / 49.0,
                capacity: 120.0,
                last_rate: if index == 3 { f64::NAN } else { 0.25 },
                day_type: DayType::ALL[index % 3],
                holiday: index % 11 == 0,
            })
            .collect();
        let part = ScoredPart {
            forecasts: vec![
                rows.iter().map(|row| row.actual_rate * 0.9).collect(),
                rows.iter().map(|row| -row.actual_rate).collect(),
            ],
            rows,
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("part.bin");
        write(&path, &part).expect("write");
        let back = read(&path).expect("read");
        assert_eq!(back.rows.len(), part.rows.len());
        for (a, b) in back.rows.iter().zip(&part.rows) {
            assert_eq!(
                (a.lot, a.horizon_steps, a.target_ms, a.day_type, a.holiday),
                (b.lot, b.horizon_steps, b.target_ms, b.day_type, b.holiday)
            );
            for (x, y) in [
                (a.actual_rate, b.actual_rate),
                (a.capacity, b.capacity),
                (a.last_rate, b.last_rate),
            ] {
                assert_eq!(x.to_bits(), y.to_bits());
            }
        }
        for (a, b) in back.forecasts.iter().zip(&part.forecasts) {
            let bits = |values: &[f64]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(a), bits(b));
        }
        std::fs::write(&path, [0u8; 20]).expect("truncate");
        assert!(read(&path).is_err(), "a short file is refused");
    }
}
