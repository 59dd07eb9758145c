//! Progress on stderr, in one home: [`ProgressLine`] for a long run on a terminal (one line
//! rewritten in place, erased at the end), [`waits::Progress`] for long waits (kernel builds,
//! package downloads) that must also show in a log.
//!
//! A long run on a terminal: one line on stderr, rewritten in place.
//!
//! On only when stderr is a terminal and the user did not ask for quiet
//! ([`ProgressLine::on_terminal`]); silent otherwise, so logs, pipes and `--json` output never
//! carry carriage returns. The line is erased when the run ends (and before anything else is
//! printed, [`ProgressLine::clear`]), so the report that follows starts on a clean line.

pub mod waits;

pub use waits::{bytes_line, minutes_seconds, Progress};

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Shortest time between two redraws: fast epochs must not flood the terminal.
const REDRAW_EVERY: Duration = Duration::from_millis(100);

/// Whether a line can be rewritten in place on stderr: it is a terminal and `TERM` is not `dumb`
/// (the convention for "no cursor control"; the lab's init sets it, since its serial ports are
/// ttys whose output the host keeps as log files).
pub fn redraws_in_place(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// One progress line on stderr (or nothing, when off).
#[derive(Clone, Debug, Default)]
pub struct ProgressLine {
    enabled: bool,
    label: String,
    drawn: bool,
    last: Option<Instant>,
}

impl ProgressLine {
    /// A line that never prints.
    pub fn off() -> Self {
        ProgressLine::default()
    }

    /// On when stderr is a terminal and `quiet` is false; `label` starts the line.
    pub fn on_terminal(quiet: bool, label: &str) -> Self {
        ProgressLine {
            enabled: !quiet && redraws_in_place(std::io::stderr().is_terminal()),
            label: label.to_string(),
            ..ProgressLine::default()
        }
    }

    /// Whether it prints at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The same setting with another label (nothing drawn yet).
    pub fn labelled(&self, label: &str) -> Self {
        ProgressLine {
            enabled: self.enabled,
            label: label.to_string(),
            ..ProgressLine::default()
        }
    }

    /// Redraws the line as `label: text` (`text` is built only when drawn; at most every 100 ms).
    pub fn draw(&mut self, text: impl FnOnce() -> String) {
        if !self.enabled || self.last.is_some_and(|t| t.elapsed() < REDRAW_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        // A terminal that went away is no reason to stop the run.
        let _ = write!(err, "\r{}: {}\x1b[K", self.label, text());
        let _ = err.flush();
        self.drawn = true;
    }

    /// Erases the line (before other output, and at the end); the next draw is not throttled.
    pub fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.drawn = false;
        }
        self.last = None;
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.clear();
    }
}

/// `epoch 7/10, 3.5/5.0 s`: where a run of `duration` in epochs of `interval` stands.
pub fn epoch_position(
    epoch: u64,
    elapsed: Duration,
    duration: Duration,
    interval: Duration,
) -> String {
    let total = duration.as_nanos().div_ceil(interval.as_nanos().max(1));
    format!(
        "epoch {epoch}/{total}, {:.1}/{:.1} s",
        elapsed.as_secs_f64(),
        duration.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_counts_epochs_rounding_up() {
        assert_eq!(
            epoch_position(
                3,
                Duration::from_millis(1500),
                Duration::from_secs(5),
                Duration::from_millis(500)
            ),
            "epoch 3/10, 1.5/5.0 s"
        );
        assert_eq!(
            epoch_position(
                1,
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::from_millis(300)
            ),
            "epoch 1/4, 0.0/1.0 s"
        );
    }

    #[test]
    fn off_and_quiet_lines_never_print() {
        assert!(!ProgressLine::off().enabled());
        assert!(!ProgressLine::on_terminal(true, "x").enabled());
        assert!(!ProgressLine::off().labelled("y").enabled());
    }
}
