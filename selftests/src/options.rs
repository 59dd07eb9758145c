//! Getopt-style command lines of the dirty-logging benchmarks (`dirty_bench`,
//! `dirty_layout_bench`); the kselftest binaries use clap ([`crate::args`]). Each binary declares its
//! options once (a getopt spec such as `"hb:v:"` and its usage text) and reads them back typed.
//! `-h` prints the usage and exits 0; anything wrong — an unknown option, a missing value, a value
//! that does not parse or is out of range — prints one line naming the option, then the usage,
//! and exits 2 ([`EXIT_USAGE`]), before any VM or host change.

use crate::ktap::{EXIT_PASS, EXIT_USAGE};
use agelab_util::units::{parse_duration, parse_size};
use std::fmt::Display;
use std::io::Write;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

/// A parsed command line.
#[derive(Debug)]
pub struct Options {
    prog: &'static str,
    usage: &'static str,
    given: Vec<(char, Option<String>)>,
}

impl Options {
    /// Parses the process's arguments against `spec` (see [`getopt`]); exits 0 after printing
    /// `usage` on `-h` (when `spec` has it), exits 2 on a malformed command line.
    pub fn parse(prog: &'static str, spec: &str, usage: &'static str) -> Self {
        Self::parse_with_long(prog, spec, usage, &[])
    }

    /// [`Options::parse`] where each long option in `long` is another spelling of a letter
    /// (`("--expect-secondary-mmu-aging", 'e')`).
    pub fn parse_with_long(
        prog: &'static str,
        spec: &str,
        usage: &'static str,
        long: &[(&str, char)],
    ) -> Self {
        let argv: Vec<String> = std::env::args()
            .skip(1)
            .map(|a| match long.iter().find(|(name, _)| *name == a) {
                Some((_, letter)) => format!("-{letter}"),
                None => a,
            })
            .collect();
        let o = Self::from_args(prog, spec, usage, &argv).unwrap_or_else(|e| {
            usage_error(prog, &e, usage);
        });
        if spec.contains('h') && o.given.iter().any(|(c, _)| *c == 'h') {
            println!("{usage}");
            std::process::exit(EXIT_PASS);
        }
        o
    }

    /// Parses `args` (without the program name) against `spec`.
    pub fn from_args(
        prog: &'static str,
        spec: &str,
        usage: &'static str,
        args: &[String],
    ) -> Result<Self, String> {
        Ok(Options {
            prog,
            usage,
            given: getopt(args, spec)?,
        })
    }

    /// The options given, in command-line order (repeated options appear repeatedly).
    pub fn iter(&self) -> impl Iterator<Item = Opt<'_>> {
        self.given.iter().map(move |(letter, value)| Opt {
            letter: *letter,
            value: value.as_deref().unwrap_or_default(),
            prog: self.prog,
            usage: self.usage,
        })
    }

    /// Rejects the command line as a whole (a combination of options): exits 2.
    pub fn bad(&self, msg: &str) -> ! {
        usage_error(self.prog, msg, self.usage)
    }
}

/// One option as given: its letter and value (empty for flags), with typed readers that exit 2
/// with a message naming the option when the value is not acceptable.
#[derive(Clone, Copy, Debug)]
pub struct Opt<'a> {
    /// The option letter.
    pub letter: char,
    /// Its value (empty for a flag).
    pub value: &'a str,
    prog: &'static str,
    usage: &'static str,
}

impl Opt<'_> {
    /// Rejects this option's value: `prog: -X: msg`, the usage, exit 2.
    pub fn bad(&self, msg: impl Display) -> ! {
        usage_error(self.prog, &format!("-{}: {msg}", self.letter), self.usage)
    }

    /// The value as a number of type `T`; `what` names it in the message.
    pub fn number<T: FromStr>(&self, what: &str) -> T {
        self.value.parse().unwrap_or_else(|_| {
            self.bad(format!(
                "invalid {what} '{}': expected a number",
                self.value
            ))
        })
    }

    /// The value as a number of at least 1.
    pub fn positive<T: FromStr + PartialOrd + From<u8>>(&self, what: &str) -> T {
        match self.value.parse::<T>() {
            Ok(n) if n >= T::from(1) => n,
            _ => self.bad(format!(
                "invalid {what} '{}': expected a positive number",
                self.value
            )),
        }
    }

    /// The value as a number in `range`.
    pub fn number_in<T>(&self, what: &str, range: RangeInclusive<T>) -> T
    where
        T: FromStr + PartialOrd + Display,
    {
        match self.value.parse::<T>() {
            Ok(n) if range.contains(&n) => n,
            _ => self.bad(format!(
                "invalid {what} '{}': expected {}..{}",
                self.value,
                range.start(),
                range.end()
            )),
        }
    }

    /// The value as a power of two that fits a `u32` (dirty ring entries).
    pub fn power_of_two(&self, what: &str) -> u32 {
        match self.value.parse::<u32>() {
            Ok(n) if n.is_power_of_two() => n,
            _ => self.bad(format!(
                "invalid {what} '{}': expected a power of two",
                self.value
            )),
        }
    }

    /// The value as a byte size (`64M`, `1G`) of at least `min` bytes.
    pub fn size(&self, min: u64) -> u64 {
        match parse_size(self.value) {
            Ok(n) if n >= min => n,
            Ok(n) => self.bad(format!("{n} bytes is less than {min} bytes")),
            Err(e) => self.bad(format!("invalid size: {e}")),
        }
    }

    /// The value as a duration (`150ms`, `2s`) of at least `min`.
    pub fn duration(&self, min: Duration) -> Duration {
        match parse_duration(self.value) {
            Ok(d) if d >= min => d,
            Ok(_) => self.bad(format!("'{}' is shorter than {min:?}", self.value)),
            Err(e) => self.bad(format!("invalid duration: {e}")),
        }
    }

    /// The value through its type's `FromStr` (backings, dirty modes), whose error names what
    /// was expected.
    pub fn parsed<T>(&self) -> T
    where
        T: FromStr,
        T::Err: Display,
    {
        self.value.parse().unwrap_or_else(|e| self.bad(e))
    }
}

/// Reports a bad command line on stderr (one line naming the problem, then the usage) and exits 2.
pub fn usage_error(prog: &str, msg: &str, usage: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "{prog}: {msg}\n{usage}");
    std::process::exit(EXIT_USAGE)
}

/// Scans `args` getopt-style against `spec` (`"b:v:h"`: a letter followed by `:` takes a value,
/// given as `-b 1G` or `-b1G`). Returns `(letter, value)` pairs in order, or a message naming
/// the bad option.
pub fn getopt(args: &[String], spec: &str) -> Result<Vec<(char, Option<String>)>, String> {
    let takes = |c: char| -> Option<bool> {
        let i = spec.find(c)?;
        Some(spec[i + c.len_utf8()..].starts_with(':'))
    };
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(rest) = a.strip_prefix('-').filter(|r| !r.is_empty()) else {
            return Err(format!("unexpected argument '{a}'"));
        };
        let mut chars = rest.chars();
        let c = chars.next().unwrap_or('-');
        match takes(c).filter(|_| c != ':') {
            None => return Err(format!("unknown option '-{c}'")),
            Some(false) => {
                if chars.next().is_some() {
                    return Err(format!("option '-{c}' takes no value (got '{a}')"));
                }
                out.push((c, None));
            }
            Some(true) => {
                let inline: String = chars.collect();
                let v = if inline.is_empty() {
                    it.next()
                        .cloned()
                        .ok_or_else(|| format!("option '-{c}' needs a value"))?
                } else {
                    inline
                };
                out.push((c, Some(v)));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn getopt_values_and_flags() {
        let got = getopt(&args("-b 1G -v2 -h"), "b:v:h").unwrap();
        assert_eq!(
            got,
            vec![
                ('b', Some("1G".into())),
                ('v', Some("2".into())),
                ('h', None)
            ]
        );
        assert!(getopt(&args("-x"), "b:").unwrap_err().contains("-x"));
        assert!(getopt(&args("-b"), "b:")
            .unwrap_err()
            .contains("needs a value"));
        assert!(getopt(&args("stray"), "b:").is_err());
    }

    #[test]
    fn options_come_back_in_order_with_their_values() {
        let o = Options::from_args("t", "M:ov:", "usage", &args("-M a -o -M b -v3")).unwrap();
        let got: Vec<(char, &str)> = o.iter().map(|x| (x.letter, x.value)).collect();
        assert_eq!(got, vec![('M', "a"), ('o', ""), ('M', "b"), ('v', "3")]);
        let v = o.iter().last().unwrap();
        assert_eq!(v.number_in::<usize>("vCPU count", 1..=8), 3);
        assert_eq!(v.positive::<u64>("vCPU count"), 3);
        assert!(Options::from_args("t", "v:", "usage", &args("-q"))
            .unwrap_err()
            .contains("'-q'"));
    }
}
