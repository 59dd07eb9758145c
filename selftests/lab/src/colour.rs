//! Coloured outcomes on a terminal: green pass, yellow skip, red failures, magenta timeouts.
//! Off when the stream is not a terminal, `TERM=dumb`, or `NO_COLOR` is set to anything
//! non-empty (<https://no-color.org>), so logs and pipes stay plain text.

use crate::outcome::Outcome;

/// Whether to colour a stream that `is_terminal`, given `TERM` and `NO_COLOR`.
pub fn wanted(is_terminal: bool, term: Option<&str>, no_color: Option<&str>) -> bool {
    is_terminal && term != Some("dumb") && no_color.is_none_or(str::is_empty)
}

/// [`wanted`] for this process's environment.
pub fn wanted_here(is_terminal: bool) -> bool {
    let term = std::env::var("TERM").ok();
    let no_color = std::env::var("NO_COLOR").ok();
    wanted(is_terminal, term.as_deref(), no_color.as_deref())
}

/// The SGR colour code of `outcome`.
fn code(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Pass | Outcome::ExpectedFail(_) => "32",
        Outcome::Skip => "33",
        Outcome::Timeout => "35",
        Outcome::Interrupted | Outcome::NotRun => "2",
        Outcome::Fail(_) | Outcome::Error | Outcome::UnexpectedPass => "1;31",
    }
}

/// `text` (the outcome's label, already padded) in the outcome's colour when `on`.
pub fn paint(outcome: &Outcome, text: &str, on: bool) -> String {
    if on {
        format!("\x1b[{}m{text}\x1b[0m", code(outcome))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_capable_terminal_without_no_color() {
        assert!(wanted(true, Some("xterm-256color"), None));
        assert!(wanted(true, None, Some("")));
        assert!(!wanted(false, Some("xterm"), None));
        assert!(!wanted(true, Some("dumb"), None));
        assert!(!wanted(true, Some("xterm"), Some("1")));
        assert_eq!(paint(&Outcome::Pass, "pass", false), "pass");
        assert_eq!(
            paint(&Outcome::Fail(1), "FAIL(1)", true),
            "\x1b[1;31mFAIL(1)\x1b[0m"
        );
        assert_eq!(
            paint(&Outcome::Timeout, "TIMEOUT", true),
            "\x1b[35mTIMEOUT\x1b[0m"
        );
    }
}
