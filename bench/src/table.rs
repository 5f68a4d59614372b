//! The house style of parkcast's tables (the CLI's own summaries use it too), and the cells the
//! benchmarks fill them with.

use std::time::Duration;

use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};

/// A table in the house style.
pub fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(header.iter().map(Cell::new));
    table
}

/// `1234567` as `1,234,567`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// Bytes as KiB / MiB.
pub fn bytes(value: u64) -> String {
    match value {
        0..1_024 => format!("{value} B"),
        1_024..1_048_576 => format!("{:.1} KiB", value as f64 / 1_024.0),
        _ => format!("{:.1} MiB", value as f64 / 1_048_576.0),
    }
}

/// A right-aligned cell.
pub fn right(text: String) -> Cell {
    Cell::new(text).set_alignment(CellAlignment::Right)
}

/// A `measure | value` row, the value right-aligned.
pub fn value_row(table: &mut Table, name: &str, value: String) {
    table.add_row(vec![Cell::new(name), right(value)]);
}

/// `count` over `seconds` as `1,234/s`.
pub fn per_second(count: u64, seconds: f64) -> String {
    format!("{}/s", thousands((count as f64 / seconds.max(1e-9)) as u64))
}

/// Milliseconds with two decimals.
pub fn millis(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(35_717), "35,717");
        assert_eq!(thousands(1_585_514), "1,585,514");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2_048), "2.0 KiB");
    }

    #[test]
    fn rates_and_milliseconds_read_as_printed() {
        assert_eq!(per_second(3_000, 2.0), "1,500/s");
        assert_eq!(per_second(5, 0.0), "5,000,000,000/s");
        assert_eq!(millis(Duration::from_micros(1_250)), "1.25");
    }
}
