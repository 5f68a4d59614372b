//! The house style of parkcast's terminal output, in one place: every summary the commands print
//! (the CLI's, the trainer's backtest and tuning tables, the benchmarks', the query client's) is a
//! table made here, with numbers formatted here, so they read alike and change together.
//!
//! ```
//! use parkcast_tables::{new_table, right, thousands};
//!
//! let mut table = new_table(&["lot", "free"]);
//! table.add_row(vec![comfy_table::Cell::new("bhm:A"), right(thousands(1_234))]);
//! assert!(table.to_string().contains("1,234"));
//! ```

pub use comfy_table::{Cell, CellAlignment, Table};

use comfy_table::presets::UTF8_FULL_CONDENSED;

/// A table in the house style with this header.
pub fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(header.iter().map(Cell::new));
    table
}

/// A right-aligned cell: numbers line up.
pub fn right(text: impl ToString) -> Cell {
    Cell::new(text.to_string()).set_alignment(CellAlignment::Right)
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

/// An amount in cents as units with two decimals and thousands separators: `-123456` as
/// `-1,234.56`.
pub fn cents(value: i64) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let value = value.unsigned_abs();
    format!("{sign}{}.{:02}", thousands(value / 100), value % 100)
}

/// Bytes as B, KiB or MiB.
pub fn bytes(value: u64) -> String {
    match value {
        0..1_024 => format!("{value} B"),
        1_024..1_048_576 => format!("{:.1} KiB", value as f64 / 1_024.0),
        _ => format!("{:.1} MiB", value as f64 / 1_048_576.0),
    }
}

/// A share as a percentage with one decimal (`0.801` -> `80.1%`), `n/a` when unknown.
pub fn percent(share: Option<f64>) -> String {
    share.map_or_else(
        || "n/a".to_owned(),
        |share| format!("{:.1}%", 100.0 * share),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_print_as_units_with_two_decimals() {
        assert_eq!(cents(0), "0.00");
        assert_eq!(cents(5), "0.05");
        assert_eq!(cents(-123_456), "-1,234.56");
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(35_717), "35,717");
        assert_eq!(thousands(1_585_514), "1,585,514");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2_048), "2.0 KiB");
        assert_eq!(percent(Some(0.8012)), "80.1%");
        assert_eq!(percent(None), "n/a");
    }
}
