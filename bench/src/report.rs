//! What a benchmark hands back to print.

use std::fmt;

/// Tables and lines in the order they are read, one block each. `{report}` prints them one per
/// line, so printing a report is the same as printing its blocks in turn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    blocks: Vec<String>,
}

impl Report {
    /// An empty report.
    pub fn new() -> Report {
        Report::default()
    }

    /// Appends a table or a line.
    pub fn push(&mut self, block: impl fmt::Display) {
        self.blocks.push(block.to_string());
    }

    /// The blocks, in order.
    pub fn blocks(&self) -> &[String] {
        &self.blocks
    }
}

impl fmt::Display for Report {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, block) in self.blocks.iter().enumerate() {
            if index > 0 {
                formatter.write_str("\n")?;
            }
            formatter.write_str(block)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_print_one_per_line() {
        let mut report = Report::new();
        report.push("first");
        report.push(format_args!("{}", 2));
        assert_eq!(report.to_string(), "first\n2");
        assert_eq!(report.blocks().len(), 2);
        assert_eq!(Report::new().to_string(), "");
    }
}
