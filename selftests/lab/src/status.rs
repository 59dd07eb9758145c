//! The status channel: a serial port that carries only framed records from the lab's init, never
//! console or command output. The command's exit code comes back through it.
//!
//! A record is one complete line `agelab-status v1 <kind> [args]`, written by `init.sh`.
//! Incomplete trailing lines (the guest died mid-write) and foreign lines are ignored, so an exit
//! code is only ever taken from a whole `exit` record.

/// Prefix of every record, including the format version.
pub const RECORD_PREFIX: &str = "agelab-status v1 ";

/// One record on the status channel.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusRecord {
    /// init is running and has mounted the pseudo file systems; guest uptime in seconds.
    Booted { uptime: f64 },
    /// Set-up problem worth showing the user (module failed to load, no /dev/kvm, ...).
    Warning(String),
    /// The command is about to start; guest uptime in seconds.
    Started { uptime: f64 },
    /// The command finished with this exit status; guest uptime in seconds.
    Exited { status: i32, uptime: f64 },
}

/// Parses every complete record in `text` (the status channel captured so far).
pub fn parse_records(text: &str) -> Vec<StatusRecord> {
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => return Vec::new(),
    };
    complete
        .split('\n')
        .filter_map(|line| parse_record(line.trim_end_matches('\r')))
        .collect()
}

fn parse_record(line: &str) -> Option<StatusRecord> {
    let rest = line.strip_prefix(RECORD_PREFIX)?;
    let (kind, args) = rest.split_once(' ').unwrap_or((rest, ""));
    let uptime = || {
        args.split_whitespace()
            .find_map(|w| w.strip_prefix("uptime="))
            .and_then(|v| v.parse::<f64>().ok())
    };
    match kind {
        "booted" => Some(StatusRecord::Booted { uptime: uptime()? }),
        "warn" => Some(StatusRecord::Warning(args.to_string())),
        "started" => Some(StatusRecord::Started { uptime: uptime()? }),
        "exit" => {
            let status = args.split_whitespace().next()?.parse::<i32>().ok()?;
            (0..=255).contains(&status).then_some(())?;
            Some(StatusRecord::Exited {
                status,
                uptime: uptime()?,
            })
        }
        _ => None,
    }
}

/// Quotes `arg` for a POSIX shell: single quotes, with embedded `'` as `'\''`.
pub fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// The guest script that runs `argv` exactly as given (no word splitting, no globbing).
pub fn command_script(argv: &[String]) -> String {
    let quoted: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
    format!("exec {}\n", quoted.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_in_order() {
        let text = "agelab-status v1 booted uptime=1.02\r\n\
                    agelab-status v1 warn insmod kvm-amd.ko failed\n\
                    noise from somewhere\n\
                    agelab-status v1 started uptime=1.50\n\
                    agelab-status v1 exit 3 uptime=2.25\n";
        assert_eq!(
            parse_records(text),
            [
                StatusRecord::Booted { uptime: 1.02 },
                StatusRecord::Warning("insmod kvm-amd.ko failed".into()),
                StatusRecord::Started { uptime: 1.5 },
                StatusRecord::Exited {
                    status: 3,
                    uptime: 2.25
                },
            ]
        );
    }

    #[test]
    fn incomplete_or_malformed_exit_records_are_ignored() {
        assert!(parse_records("agelab-status v1 exit 3 uptime=2.25").is_empty());
        assert!(parse_records("agelab-status v1 exit 300 uptime=1\n").is_empty());
        assert!(parse_records("agelab-status v1 exit x uptime=1\n").is_empty());
        assert!(parse_records("agelab-status v2 exit 0 uptime=1\n").is_empty());
        assert!(parse_records("xagelab-status v1 exit 0 uptime=1\n").is_empty());
        assert_eq!(
            parse_records("agelab-status v1 exit 0 uptime=1\nagelab-status v1 exit 1"),
            [StatusRecord::Exited {
                status: 0,
                uptime: 1.0
            }]
        );
    }

    #[test]
    fn quoting_survives_the_shell() {
        let argv: Vec<String> = ["printf", "%s|", "a b", "it's", "$HOME", "*", "", "\"q\"\n"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let script = command_script(&argv);
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "a b|it's|$HOME|*||\"q\"\n|"
        );
    }

    use proptest::prelude::*;

    /// A real status channel captured from `agelab lab --kernel debian-6.12 --zram 64M -- sh -c
    /// 'sleep 1; exit 7'`, and the same with a warning and a record cut mid-write.
    const FIXTURES: &[&str] = &[
        include_str!("../tests/fixtures/status/debian-6.12-exit-7.txt"),
        concat!(
            include_str!("../tests/fixtures/status/debian-6.12-exit-7.txt"),
            "agelab-status v1 warn insmod kvm-amd.ko failed\r\nagelab-status v1 exit 1 upt"
        ),
    ];

    #[test]
    fn arbitrary_status_text_is_parsed_without_panic() {
        crate::fuzz::run_cases(
            "status arbitrary text",
            2048,
            "(agelab-status v1 |booted |started |exit |warn |uptime=|-?[0-9.e+]{1,8}| |\r|\n|\\PC){0,40}",
            |s| {
                for r in parse_records(&s) {
                    if let StatusRecord::Exited { status, .. } = r {
                        prop_assert!((0..=255).contains(&status), "{s:?}");
                    }
                }
                Ok(())
            },
        );
    }

    #[test]
    fn mutated_real_status_channels_are_parsed_without_panic() {
        crate::fuzz::run_cases(
            "status mutated captures",
            2048,
            crate::fuzz::mutated(FIXTURES),
            |s| {
                let records = parse_records(&s);
                // Whatever was appended after the last newline never adds a record.
                let cut = s.rfind('\n').map_or("", |i| &s[..=i]);
                prop_assert_eq!(&parse_records(cut), &records);
                Ok(())
            },
        );
    }

    /// `command_script` is the writer the guest's shell reads: any argv comes back verbatim.
    #[test]
    fn any_argv_survives_the_shell() {
        crate::fuzz::run_cases(
            "status command_script round trip",
            128,
            proptest::collection::vec("[ -~\n\t'\"$`\\\\*?é]{0,12}", 0..5),
            |args| {
                let mut argv = vec!["printf".to_string(), "%s\\0".to_string()];
                argv.extend(args.iter().cloned());
                let out = std::process::Command::new("sh")
                    .args(["-c", &command_script(&argv)])
                    .output()
                    .unwrap();
                let text = String::from_utf8(out.stdout).unwrap();
                let mut got: Vec<&str> = text.split('\0').collect();
                prop_assert_eq!(got.pop(), Some(""));
                if args.is_empty() {
                    // printf prints its format once with no arguments.
                    prop_assert_eq!(got, vec![""]);
                } else {
                    prop_assert_eq!(got, args.iter().map(String::as_str).collect::<Vec<_>>());
                }
                Ok(())
            },
        );
    }
}
