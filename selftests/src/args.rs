//! Command lines of the kselftest binaries: clap derive, with the kernel tests' short options
//! (`-b 64M`, `-b64M`; a repeated option takes its last value, as with getopt, unless the option
//! collects every value) and kselftest's exit codes. `-h` prints the binary's usage text and
//! exits 0; anything wrong — an unknown option, a missing value, a value that does not parse or
//! is out of range — prints one line `prog: <what>` naming the option, then the usage, on stderr
//! and exits 2 ([`EXIT_USAGE`]), before any VM or host change.
//!
//! The value parsers below carry the rules the options share (positive counts, ranges, powers of
//! two, sizes and durations with a minimum), each with a message saying what was expected.

use crate::ktap::{EXIT_PASS, EXIT_USAGE};
use agelab_util::units::{parse_duration, parse_size, UnitError};
use clap::error::ErrorKind;
use std::ffi::OsString;
use std::fmt::Display;
use std::io::Write;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

/// Why a command line was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `-h` or `--help`: print the usage, exit 0.
    Help,
    /// A bad command line: the one line naming the problem.
    Bad(String),
}

/// Parses `args` (the first is the program name) into `T`.
pub fn try_parse_from<T, I, S>(args: I) -> Result<T, Refusal>
where
    T: clap::Parser,
    I: IntoIterator<Item = S>,
    S: Into<OsString> + Clone,
{
    T::try_parse_from(args).map_err(|e| match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            Refusal::Help
        }
        _ => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid command line");
            Refusal::Bad(first.strip_prefix("error: ").unwrap_or(first).to_string())
        }
    })
}

/// Parses the process's command line into `T`; `-h` prints `usage` and exits 0, a bad command
/// line exits 2 (see the module documentation).
pub fn parse<T: clap::Parser>(prog: &str, usage: &str) -> T {
    match try_parse_from(std::env::args_os()) {
        Ok(t) => t,
        Err(Refusal::Help) => {
            println!("{usage}");
            std::process::exit(EXIT_PASS)
        }
        Err(Refusal::Bad(msg)) => usage_error(prog, &msg, usage),
    }
}

/// [`parse`] for binaries whose usage text is clap's help (long options documented on the
/// fields), laid out like the others: `usage: prog [OPTIONS]`, then the options.
pub fn parse_described<T: clap::Parser>(prog: &str) -> T {
    let help = T::command()
        .help_template("usage: {usage}\n{all-args}")
        .render_help()
        .to_string();
    parse(prog, help.trim_end())
}

/// Reports a bad command line on stderr (one line naming the problem, then the usage) and exits 2.
pub fn usage_error(prog: &str, msg: &str, usage: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "{prog}: {msg}\n{usage}");
    std::process::exit(EXIT_USAGE)
}

/// A value an option's parser refused; clap prints it after the option's name.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgValueError {
    /// Not a number of at least 1.
    #[error("expected a positive number")]
    NotPositive,
    /// Not a number in the option's range.
    #[error("expected {low}..{high}")]
    OutOfRange {
        /// The smallest value taken.
        low: String,
        /// The largest value taken.
        high: String,
    },
    /// Not a power of two that fits a `u32`.
    #[error("expected a power of two")]
    NotPowerOfTwo,
    /// Not a byte size.
    #[error("invalid size: {0}")]
    Size(#[source] UnitError),
    /// A byte size below the option's minimum.
    #[error("{bytes} bytes is less than {min} bytes")]
    SizeTooSmall {
        /// The size given.
        bytes: u64,
        /// The least the option takes.
        min: u64,
    },
    /// A byte size that is not a whole number of the option's unit.
    #[error("'{given}' is not a multiple of {unit}")]
    NotMultiple {
        /// The size as given.
        given: String,
        /// The unit it must be a multiple of, as printed.
        unit: &'static str,
    },
    /// Not a duration.
    #[error("invalid duration: {0}")]
    Duration(#[source] UnitError),
    /// A duration below the option's minimum.
    #[error("shorter than {min:?}")]
    DurationTooShort {
        /// The least the option takes.
        min: Duration,
    },
}

/// A parser of a number of at least 1.
pub fn positive<T: FromStr + PartialOrd + From<u8>>(s: &str) -> Result<T, ArgValueError> {
    match s.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        _ => Err(ArgValueError::NotPositive),
    }
}

/// A parser of a number in `range`.
pub fn number_in<T>(
    range: RangeInclusive<T>,
) -> impl Fn(&str) -> Result<T, ArgValueError> + Clone + Send + Sync + 'static
where
    T: FromStr + PartialOrd + Display + Clone + Send + Sync + 'static,
{
    move |s| match s.parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(ArgValueError::OutOfRange {
            low: range.start().to_string(),
            high: range.end().to_string(),
        }),
    }
}

/// A parser of a power of two that fits a `u32` (dirty ring entries).
pub fn power_of_two(s: &str) -> Result<u32, ArgValueError> {
    match s.parse::<u32>() {
        Ok(n) if n.is_power_of_two() => Ok(n),
        _ => Err(ArgValueError::NotPowerOfTwo),
    }
}

/// A parser of a byte size (`64M`, `1G`) of at least `min` bytes.
pub fn size_at_least(
    min: u64,
) -> impl Fn(&str) -> Result<u64, ArgValueError> + Clone + Send + Sync {
    move |s| match parse_size(s) {
        Ok(n) if n >= min => Ok(n),
        Ok(n) => Err(ArgValueError::SizeTooSmall { bytes: n, min }),
        Err(e) => Err(ArgValueError::Size(e)),
    }
}

/// A parser of a duration (`150ms`, `2s`) of at least `min`.
pub fn duration_at_least(
    min: Duration,
) -> impl Fn(&str) -> Result<Duration, ArgValueError> + Clone + Send + Sync {
    move |s| match parse_duration(s) {
        Ok(d) if d >= min => Ok(d),
        Ok(_) => Err(ArgValueError::DurationTooShort { min }),
        Err(e) => Err(ArgValueError::Duration(e)),
    }
}

/// A parser through the type's `FromStr` (backings, dirty modes), whose error names what was
/// expected.
pub fn from_str<T: FromStr>(s: &str) -> Result<T, T::Err> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    #[command(args_override_self = true)]
    struct Demo {
        #[arg(short = 'b', value_parser = size_at_least(4096))]
        bytes: Option<u64>,
        #[arg(short = 'v', value_parser = number_in(1usize..=8))]
        vcpus: Option<usize>,
        #[arg(short = 'M', value_parser = from_str::<u8>)]
        modes: Vec<u8>,
        #[arg(short = 'o')]
        overlap: bool,
    }

    fn parse_demo(line: &str) -> Result<Demo, Refusal> {
        try_parse_from(std::iter::once("demo").chain(line.split_whitespace()))
    }

    fn refusal(line: &str) -> String {
        match parse_demo(line) {
            Err(Refusal::Bad(msg)) => msg,
            other => panic!("{line}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn getopt_forms_are_accepted() {
        let d = parse_demo("-b 1G -v2 -M 1 -o -M 2 -b64M").expect("accepted");
        assert_eq!(d.bytes, Some(64 << 20), "the last -b wins, as with getopt");
        assert_eq!(d.vcpus, Some(2));
        assert_eq!(d.modes, vec![1, 2], "a collecting option keeps every value");
        assert!(d.overlap);
        assert_eq!(parse_demo("-h").unwrap_err(), Refusal::Help);
    }

    #[test]
    fn a_bad_command_line_is_one_line_naming_the_option() {
        for (line, needle) in [
            ("-v 0", "-v"),
            ("-v 9", "expected 1..8"),
            ("-b 12X", "-b"),
            ("-b 1k", "less than 4096 bytes"),
            ("-q", "'-q'"),
            ("-M", "-M"),
            ("stray", "'stray'"),
        ] {
            let msg = refusal(line);
            assert!(msg.contains(needle), "{line}: {msg:?} names {needle:?}");
            assert!(!msg.contains('\n'), "{line}: one line: {msg:?}");
        }
    }
}
