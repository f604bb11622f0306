//! The progress bar on a terminal (indicatif): the phase, elapsed time, connections opened,
//! then messages sent, delivered and errors while the load runs. When progress is off (not a
//! terminal, `--no-progress`) every call draws nothing, so a log or a pipe gets the report
//! alone.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the bar is redrawn (and its counters read).
pub(crate) const TICK: Duration = Duration::from_millis(200);

/// One bar through every phase of a run.
pub(crate) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar on stderr when `on`, or one that draws nothing.
    pub(crate) fn new(on: bool) -> Self {
        let bar = if on {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5))
        } else {
            ProgressBar::hidden()
        };
        Self { bar }
    }

    /// Phase one: `wanted` handshakes.
    pub(crate) fn connecting(&self, wanted: usize) {
        self.bar.set_style(style(
            "{prefix:>10.cyan.bold} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} connections  {msg}",
        ));
        self.bar.set_prefix("connecting");
        self.bar.set_length(wanted as u64);
        self.bar.set_position(0);
        self.bar.enable_steady_tick(TICK);
    }

    /// A handle for the handshake tasks.
    pub(crate) fn handle(&self) -> ProgressBar {
        self.bar.clone()
    }

    /// Phase two: the load runs for `total` (warm-up, then measured).
    pub(crate) fn running(&self, total: Duration) {
        self.bar.set_style(style(
            "{prefix:>10.green.bold} [{elapsed_precise}] {bar:30.green/blue} {msg}",
        ));
        self.bar.set_length(total.as_millis() as u64);
        self.bar.set_position(0);
        self.bar.reset_elapsed();
    }

    /// The counters, `at` into the load.
    pub(crate) fn load(&self, phase: &'static str, at: Duration, counts: Counts) {
        self.bar.set_prefix(phase);
        self.bar.set_position(at.as_millis() as u64);
        self.bar.set_message(format!(
            "sent {}  delivered {}  errors {}",
            counts.sent, counts.delivered, counts.errors
        ));
    }

    /// Phase three: the last deliveries land.
    pub(crate) fn draining(&self) {
        self.bar.set_prefix("draining");
    }

    /// Removes the bar, so that the report is printed on a clean line.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// What the bar shows while the load runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counts {
    pub(crate) sent: u64,
    pub(crate) delivered: u64,
    pub(crate) errors: u64,
}

impl Drop for Progress {
    /// A run that fails half-way leaves no half-drawn bar behind its error.
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants checked by the tests; a bad one falls back to the default.
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}
