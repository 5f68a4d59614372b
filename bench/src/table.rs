//! The cells the benchmarks fill their tables with; the house style itself (tables, thousands,
//! bytes, right-aligned cells) is [`parkcast_tables`], re-exported here.

use std::time::Duration;

use parkcast_tables::{Cell, Table};
pub use parkcast_tables::{bytes, new_table, right, thousands};

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
    fn rates_and_milliseconds_read_as_printed() {
        assert_eq!(per_second(3_000, 2.0), "1,500/s");
        assert_eq!(per_second(5, 0.0), "5,000,000,000/s");
        assert_eq!(millis(Duration::from_micros(1_250)), "1.25");
    }
}
