//! What a matrix run shows while its cells run.
//!
//! On a terminal (stderr a tty, `TERM` not `dumb`): an `indicatif` multi-line view, one spinner
//! line per running cell with its elapsed time and a bar of the cells done with the run's ETA;
//! each finished cell's line is printed above it. Anywhere else (CI logs, pipes, `TERM=dumb`):
//! one plain line per finished cell, `agelab lab: [3/51, 2m05s elapsed, ~4m12s left] KERNEL /
//! TEST: OUTCOME (S s, log PATH)`, as before the view existed.

use crate::outcome::Outcome;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How often a running cell's spinner and elapsed time are redrawn.
const TICK: Duration = Duration::from_millis(200);

/// Whether stderr can hold a view redrawn in place.
pub fn live_view_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// The view of one matrix run.
#[derive(Debug)]
pub struct CellsView {
    live: Option<(MultiProgress, ProgressBar)>,
    total: usize,
    done: AtomicUsize,
    started: Instant,
    hide_passed: bool,
    colour: bool,
}

/// A running cell's line (nothing in a log).
#[derive(Debug)]
pub struct RunningCell(Option<ProgressBar>);

impl CellsView {
    /// A view of `total` cells; live when `live` (see [`live_view_wanted`]).
    pub fn new(total: usize, live: bool, hide_passed: bool) -> Self {
        let live = live.then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let overall = multi.add(ProgressBar::new(total as u64));
            overall.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {pos}/{len} cells  {elapsed} elapsed, ETA {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            overall.enable_steady_tick(TICK);
            (multi, overall)
        });
        CellsView {
            colour: live.is_some() && crate::colour::wanted_here(true),
            live,
            total,
            done: AtomicUsize::new(0),
            started: Instant::now(),
            hide_passed,
        }
    }

    /// A line for everyone (above the live view on a terminal).
    pub fn message(&self, line: &str) {
        match &self.live {
            Some((multi, _)) => {
                let _ = multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    /// `kernel` × `test` starts.
    pub fn start(&self, kernel: &str, test: &str) -> RunningCell {
        RunningCell(self.live.as_ref().map(|(multi, overall)| {
            let bar = multi.insert_before(overall, ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .expect("a valid template"),
            );
            bar.set_message(format!("{kernel} / {test}"));
            bar.enable_steady_tick(TICK);
            bar
        }))
    }

    /// A cell ended with `outcome`; `what` is `KERNEL / TEST`, `tail` the rest of its line.
    pub fn finish(&self, cell: RunningCell, what: &str, outcome: &Outcome, tail: &str) {
        let n = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(bar) = cell.0 {
            bar.finish_and_clear();
        }
        let label = crate::colour::paint(outcome, &outcome.label(), self.colour);
        let line = match &self.live {
            Some((_, overall)) => {
                overall.inc(1);
                format!("{what}: {label} {tail}")
            }
            None => format!(
                "agelab lab: {} {what}: {label} {tail}",
                progress(n, self.total, self.started.elapsed())
            ),
        };
        if !(self.hide_passed && outcome.passed()) {
            self.message(&line);
        }
    }

    /// Removes the live view (before the table is printed).
    pub fn close(&self) {
        if let Some((multi, overall)) = &self.live {
            overall.finish_and_clear();
            let _ = multi.clear();
        }
    }
}

/// `[3/51, 2m05s elapsed, ~4m12s left]`: the estimate assumes the cells left take as long as
/// the ones done (they run `jobs` at a time, as the ones done did).
pub fn progress(done: usize, total: usize, elapsed: std::time::Duration) -> String {
    let fmt = |secs: u64| {
        if secs >= 60 {
            format!("{}m{:02}s", secs / 60, secs % 60)
        } else {
            format!("{secs}s")
        }
    };
    let left = if done == 0 {
        String::new()
    } else {
        let per = elapsed.as_secs_f64() / done as f64;
        format!(
            ", ~{} left",
            fmt((per * (total - done) as f64).round() as u64)
        )
    };
    format!("[{done}/{total}, {} elapsed{left}]", fmt(elapsed.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::progress;

    #[test]
    fn progress_line_estimates_what_is_left() {
        use std::time::Duration;
        assert_eq!(
            progress(0, 10, Duration::from_secs(5)),
            "[0/10, 5s elapsed]"
        );
        assert_eq!(
            progress(3, 12, Duration::from_secs(90)),
            "[3/12, 1m30s elapsed, ~4m30s left]"
        );
        assert_eq!(
            progress(12, 12, Duration::from_secs(61)),
            "[12/12, 1m01s elapsed, ~0s left]"
        );
    }
}
