//! Parsers for sizes (`512M`, `1G`, `4096`) and durations (`5s`, `500ms`, `2m`) on the command
//! line, with messages that say what was expected: one home for `agelab`, the selftest binaries
//! and the lab.

use std::time::Duration;

/// A size or duration on the command line that could not be read; the message quotes the text
/// and says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a number with a known size suffix.
    #[error("'{0}' is not a size (expected e.g. 512M, 1G, 4096)")]
    NotASize(String),
    /// A size past `u64`.
    #[error("'{0}' is too large")]
    SizeTooLarge(String),
    /// A size of 0.
    #[error("'{0}': size must be larger than 0")]
    ZeroSize(String),
    /// Not a plain decimal number before the unit.
    #[error("'{0}' is not a duration (expected e.g. 500ms, 5s, 2m)")]
    NotADuration(String),
    /// A unit other than `ms`, `s`, `m`/`min` or `h`.
    #[error("'{text}': unknown duration unit '{unit}' (ms, s, m, h)")]
    UnknownDurationUnit {
        /// The text as given.
        text: String,
        /// The unit found.
        unit: String,
    },
    /// A duration `Duration` cannot hold.
    #[error("'{0}' is out of range")]
    DurationOutOfRange(String),
    /// A duration of 0.
    #[error("'{0}': duration must be larger than 0")]
    ZeroDuration(String),
}

/// Parses a byte size with an optional K/M/G/T suffix (binary units, `iB`/`B` optional).
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower.trim_end_matches("ib").trim_end_matches('b');
    let (num, shift) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 10),
        Some('m') => (&body[..body.len() - 1], 20),
        Some('g') => (&body[..body.len() - 1], 30),
        Some('t') => (&body[..body.len() - 1], 40),
        _ => (body, 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| UnitError::NotASize(s.to_string()))?;
    let v = n
        .checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| UnitError::SizeTooLarge(s.to_string()))?;
    if v == 0 {
        return Err(UnitError::ZeroSize(s.to_string()));
    }
    Ok(v)
}

/// Parses a duration: a plain decimal number (no sign, no exponent) with a unit `ms`, `s`,
/// `m`/`min` or `h`, or none for seconds (`500ms`, `5s`, `2m`, `1h`, `90`). Zero, negative and
/// out-of-range durations are errors. The one duration parser of the command line, the
/// selftests and the lab.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| UnitError::NotADuration(s.to_string()))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(UnitError::UnknownDurationUnit {
                text: s.to_string(),
                unit: unit.to_string(),
            })
        }
    };
    let d = Duration::try_from_secs_f64(secs)
        .map_err(|_| UnitError::DurationOutOfRange(s.to_string()))?;
    if d.is_zero() {
        return Err(UnitError::ZeroDuration(s.to_string()));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12X")
            .unwrap_err()
            .to_string()
            .contains("not a size"));
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .to_string()
            .contains("too large"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5min"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("0ms")
            .unwrap_err()
            .to_string()
            .contains("larger than 0"));
        // Syntax f64 would accept but a duration should not.
        assert!(parse_duration("1e3s").is_err());
        assert!(parse_duration("+5s").is_err());
        assert!(parse_duration("infs").is_err());
        assert!(parse_duration(&format!("{}s", "9".repeat(400)))
            .unwrap_err()
            .to_string()
            .contains("out of range"));
    }

    // 1024 cases per run: arbitrary short strings, and number-like ones with every suffix and
    // lengths that overflow, give a value or an error, never a panic.
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]
        #[test]
        fn size_parser_never_panics(s in ".{0,12}|[0-9.eE+-]{0,30}(k|M|G|T|KiB|ms|s|m|min|h|B)?|[0-9]{0,400}(\\.[0-9]{0,3})?(ms|s|m|min|h|x)?") {
            let _ = parse_size(&s);
            let _ = parse_duration(&s);
        }
    }
}
