//! Progress bars for long work, drawn on stderr only when it is a terminal.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parkcast_training::progress::Progress;

/// A progress bar that follows the stages of a job.
pub struct BarProgress {
    bar: ProgressBar,
}

impl BarProgress {
    /// A bar; hidden when `quiet` is set or stderr is not a terminal (indicatif checks the latter).
    pub fn new(quiet: bool) -> Self {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.enable_steady_tick(Duration::from_millis(120));
        BarProgress { bar }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for BarProgress {
    fn stage(&self, name: &str, total: Option<u64>) {
        let style = match total {
            Some(_) => ProgressStyle::with_template(
                "{spinner} {msg:<24} [{bar:40}] {human_pos}/{human_len} ({eta} left)",
            )
            .expect("the bar template should be valid")
            .progress_chars("=> "),
            None => ProgressStyle::with_template("{spinner} {msg:<24} {human_pos} ({elapsed})")
                .expect("the spinner template should be valid"),
        };
        self.bar.set_style(style);
        self.bar.set_message(name.to_owned());
        self.bar.set_length(total.unwrap_or(0));
        self.bar.set_position(0);
    }

    fn advance(&self, units: u64) {
        self.bar.inc(units);
    }
}
