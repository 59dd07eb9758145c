//! Progress of long waits (kernel builds, package downloads) on stderr: one line rewritten in
//! place on a terminal, a new line every so often otherwise (CI logs), so minutes of work are
//! never silent and a log is not flooded.

use std::io::{self, IsTerminal, Write};
use std::time::Duration;

/// How often the line is rewritten on a terminal.
pub const TERMINAL_EVERY: Duration = Duration::from_secs(1);

/// Prints progress lines to `W` (stderr in the lab, a buffer in tests).
#[derive(Debug)]
pub struct Progress<W: Write> {
    out: W,
    terminal: bool,
    every: Duration,
    last: Duration,
    printed: bool,
}

impl Progress<io::Stderr> {
    /// Progress on stderr: in place every second on a terminal, a line every `log_every`
    /// otherwise.
    pub fn stderr(log_every: Duration) -> Self {
        let terminal = super::redraws_in_place(io::stderr().is_terminal());
        let every = if terminal { TERMINAL_EVERY } else { log_every };
        Progress::new(io::stderr(), terminal, every)
    }
}

impl<W: Write> Progress<W> {
    /// Progress on `out`; `terminal` rewrites one line in place; a line at most every `every`.
    pub fn new(out: W, terminal: bool, every: Duration) -> Self {
        Progress {
            out,
            terminal,
            every,
            last: Duration::ZERO,
            printed: false,
        }
    }

    /// Called while the work runs (`elapsed` since it started): prints `line()` when `every` has
    /// passed since the last line (or since the start).
    pub fn tick(&mut self, elapsed: Duration, line: impl FnOnce() -> String) {
        if elapsed < self.last + self.every {
            return;
        }
        self.last = elapsed;
        self.printed = true;
        let line = line();
        // Progress is best effort: a closed stderr must not fail the work it describes.
        let _ = if self.terminal {
            write!(self.out, "\r{line}\x1b[K")
        } else {
            writeln!(self.out, "{line}")
        };
        let _ = self.out.flush();
    }

    /// The work ended: `line` on its own line when anything was printed before or the work took
    /// at least `min` (short work stays quiet).
    pub fn done(&mut self, elapsed: Duration, min: Duration, line: &str) {
        if !self.printed && elapsed < min {
            return;
        }
        let cr = if self.terminal { "\r" } else { "" };
        let clear = if self.terminal { "\x1b[K" } else { "" };
        let _ = writeln!(self.out, "{cr}{line}{clear}");
        let _ = self.out.flush();
    }

    /// The writer (tests read what was printed).
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// `2m05s` or `7s`.
pub fn minutes_seconds(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    format!("{}m{:02}s", secs / 60, secs % 60)
}

/// `42.0/164.1 MB (25%), 12.3 MB/s, 0m03s`: bytes so far of `total` (unknown: 0), the mean rate
/// since the start, and the time spent.
pub fn bytes_line(done: u64, total: u64, elapsed: Duration) -> String {
    const MB: f64 = 1e6;
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        done as f64 / MB / secs
    } else {
        0.0
    };
    let of = if total > 0 {
        format!(
            "{:.1}/{:.1} MB ({}%)",
            done as f64 / MB,
            total as f64 / MB,
            done.saturating_mul(100) / total
        )
    } else {
        format!("{:.1} MB", done as f64 / MB)
    };
    format!("{of}, {rate:.1} MB/s, {}", minutes_seconds(elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(p: Progress<Vec<u8>>) -> String {
        String::from_utf8(p.into_inner()).unwrap()
    }

    #[test]
    fn a_log_gets_one_line_per_period() {
        let mut p = Progress::new(Vec::new(), false, Duration::from_secs(10));
        for s in 0..=25 {
            p.tick(Duration::from_secs(s), || format!("at {s}"));
        }
        p.done(Duration::from_secs(26), Duration::from_secs(5), "done");
        assert_eq!(text(p), "at 10\nat 20\ndone\n");
    }

    #[test]
    fn a_terminal_line_is_rewritten_in_place() {
        let mut p = Progress::new(Vec::new(), true, Duration::from_secs(1));
        for s in 0..3 {
            p.tick(Duration::from_secs(s), || format!("at {s}"));
        }
        p.done(Duration::from_secs(3), Duration::from_secs(5), "done");
        assert_eq!(text(p), "\rat 1\x1b[K\rat 2\x1b[K\rdone\x1b[K\n");
    }

    #[test]
    fn short_quiet_work_stays_quiet() {
        let mut p = Progress::new(Vec::new(), false, Duration::from_secs(10));
        p.tick(Duration::from_secs(1), || unreachable!("not due"));
        p.done(Duration::from_secs(2), Duration::from_secs(5), "done");
        assert_eq!(text(p), "");
    }

    #[test]
    fn byte_lines() {
        assert_eq!(
            bytes_line(42_000_000, 164_100_000, Duration::from_secs(4)),
            "42.0/164.1 MB (25%), 10.5 MB/s, 0m04s"
        );
        assert_eq!(
            bytes_line(1_500_000, 0, Duration::ZERO),
            "1.5 MB, 0.0 MB/s, 0m00s"
        );
        assert_eq!(minutes_seconds(Duration::from_secs(125)), "2m05s");
    }
}
