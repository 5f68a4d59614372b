//! Progress bars for long work, drawn on stderr only when it is a terminal.
//!
//! Where no bar is drawn (`--quiet`, or stderr is a file or a CI log), a run of several minutes
//! would otherwise show nothing: each stage then logs its start, a line at most every
//! [`HEARTBEAT`] with its position, and its end (`--log-level warn` silences them).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parkcast_training::progress::Progress;

/// How often a job without a bar logs where it is.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// A progress bar that follows the stages of a job.
pub struct BarProgress {
    bar: ProgressBar,
    /// Set when no bar is drawn: the stage being logged instead.
    log: Option<Mutex<Option<LoggedStage>>>,
}

/// A stage followed by log lines.
struct LoggedStage {
    name: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_logged: Instant,
}

impl LoggedStage {
    fn position(&self) -> String {
        match self.total {
            Some(total) if total > 0 => format!(
                "{}/{} ({:.0}%)",
                self.done,
                total,
                100.0 * self.done as f64 / total as f64
            ),
            _ => self.done.to_string(),
        }
    }

    fn finished(&self) {
        tracing::info!(
            stage = %self.name,
            done = %self.position(),
            seconds = format!("{:.1}", self.started.elapsed().as_secs_f64()),
            "stage finished"
        );
    }
}

/// A bar of `total` (a spinner without one) drawn with `template`, for the commands that follow a
/// library callback rather than [`Progress`] stages; hidden as [`BarProgress::new`]'s.
pub fn bar(quiet: bool, total: Option<u64>, template: &str) -> ProgressBar {
    let bar = hidden_unless(quiet, total);
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("the bar template should be valid")
            .progress_chars("=> "),
    );
    if total.is_none() {
        bar.enable_steady_tick(Duration::from_millis(120));
    }
    bar
}

/// A bar on stderr, hidden when `quiet` is set or stderr is not a terminal (indicatif checks the
/// latter).
fn hidden_unless(quiet: bool, total: Option<u64>) -> ProgressBar {
    let target = if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    ProgressBar::with_draw_target(total, target)
}

impl BarProgress {
    /// A bar; hidden when `quiet` is set or stderr is not a terminal.
    pub fn new(quiet: bool) -> Self {
        let bar = hidden_unless(quiet, None);
        let log = bar.is_hidden().then(|| Mutex::new(None));
        if log.is_none() {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        BarProgress { bar, log }
    }

    /// Runs `work` with a bar, finished whatever `work` returns.
    pub fn run<T>(quiet: bool, work: impl FnOnce(&BarProgress) -> T) -> T {
        let progress = BarProgress::new(quiet);
        let result = work(&progress);
        progress.finish();
        result
    }

    /// Removes the bar from the terminal (or logs the last stage's end).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
        if let Some(log) = &self.log
            && let Some(stage) = log.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            stage.finished();
        }
    }
}

impl Progress for BarProgress {
    fn stage(&self, name: &str, total: Option<u64>) {
        if let Some(log) = &self.log {
            let mut current = log.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(previous) = current.take() {
                previous.finished();
            }
            tracing::info!(stage = name, total, "stage started");
            let now = Instant::now();
            *current = Some(LoggedStage {
                name: name.to_owned(),
                total,
                done: 0,
                started: now,
                last_logged: now,
            });
            return;
        }
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
        if let Some(log) = &self.log {
            let mut current = log.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(stage) = current.as_mut() {
                stage.done += units;
                if stage.last_logged.elapsed() >= HEARTBEAT {
                    stage.last_logged = Instant::now();
                    tracing::info!(
                        stage = %stage.name,
                        done = %stage.position(),
                        seconds = format!("{:.0}", stage.started.elapsed().as_secs_f64()),
                        "still working"
                    );
                }
            }
            return;
        }
        self.bar.inc(units);
    }
}
