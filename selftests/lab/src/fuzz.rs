//! Property-test support for the lab's parsers (tests only): a runner that counts and prints the
//! cases it ran, and arbitrary mutations of captured real text (`tests/fixtures/`).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::io::Write;

/// Runs `check` on `cases` values of `strategy` (a panic in `check` fails the run, shrunk to a
/// minimal input by proptest), then prints and returns how many cases ran.
pub fn run_cases<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    check: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> u32 {
    let ran = std::cell::Cell::new(0u32);
    let mut runner = TestRunner::new(Config {
        cases,
        // Cases are cheap and the inputs are text: no regression files, failures print the input.
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |value| {
        ran.set(ran.get() + 1);
        check(value)
    });
    if let Err(e) = result {
        panic!("property {name} failed: {e}");
    }
    let ran = ran.get();
    let _ = writeln!(
        std::io::stderr().lock(),
        "property {name}: {ran} cases, none panicked"
    );
    assert!(ran >= cases, "{name}: only {ran} of {cases} cases ran");
    ran
}

/// One edit of a text, at a position given as a fraction of its length.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Delete up to `len` characters.
    Delete { at: f64, len: usize },
    /// Insert arbitrary text.
    Insert { at: f64, text: String },
    /// Replace one character.
    Replace { at: f64, with: char },
    /// Repeat the line holding the position.
    DuplicateLine { at: f64 },
    /// Cut the text there (a capture that stopped mid-write).
    Truncate { at: f64 },
}

/// Up to `max` mutations, weighted towards small edits.
pub fn mutations(max: usize) -> impl Strategy<Value = Vec<Mutation>> {
    let at = 0.0..1.0f64;
    let one = prop_oneof![
        (at.clone(), 1..40usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (at.clone(), "\\PC{0,12}|[\n\r\t :#|,()<>=.-]{1,4}|\n\n")
            .prop_map(|(at, text)| Mutation::Insert { at, text }),
        (at.clone(), any::<char>()).prop_map(|(at, with)| Mutation::Replace { at, with }),
        at.clone().prop_map(|at| Mutation::DuplicateLine { at }),
        at.prop_map(|at| Mutation::Truncate { at }),
    ];
    proptest::collection::vec(one, 1..=max)
}

/// `text` with `muts` applied in order (positions on character boundaries).
pub fn apply(text: &str, muts: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let pos = |at: f64, len: usize| ((at * len as f64) as usize).min(len);
    for m in muts {
        let n = chars.len();
        match m {
            Mutation::Delete { at, len } => {
                let p = pos(*at, n);
                chars.drain(p..(p + len).min(n));
            }
            Mutation::Insert { at, text } => {
                let p = pos(*at, n);
                chars.splice(p..p, text.chars());
            }
            Mutation::Replace { at, with } => {
                if n > 0 {
                    chars[pos(*at, n - 1)] = *with;
                }
            }
            Mutation::DuplicateLine { at } => {
                let p = pos(*at, n);
                let start = chars[..p]
                    .iter()
                    .rposition(|c| *c == '\n')
                    .map_or(0, |i| i + 1);
                let end = chars[p..]
                    .iter()
                    .position(|c| *c == '\n')
                    .map_or(n, |i| p + i + 1);
                let line: Vec<char> = chars[start..end].to_vec();
                chars.splice(end..end, line);
            }
            Mutation::Truncate { at } => chars.truncate(pos(*at, n)),
        }
    }
    chars.into_iter().collect()
}

/// A captured fixture (index into `fixtures`) with up to 8 mutations applied.
pub fn mutated(fixtures: &'static [&'static str]) -> impl Strategy<Value = String> {
    (0..fixtures.len(), mutations(8)).prop_map(move |(i, m)| apply(fixtures[i], &m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_edit_where_they_say() {
        let t = "ab\ncd\n";
        assert_eq!(apply(t, &[Mutation::Delete { at: 0.0, len: 3 }]), "cd\n");
        assert_eq!(
            apply(t, &[Mutation::DuplicateLine { at: 0.6 }]),
            "ab\ncd\ncd\n"
        );
        assert_eq!(apply(t, &[Mutation::Truncate { at: 0.5 }]), "ab\n");
        assert_eq!(
            apply(
                t,
                &[Mutation::Replace {
                    at: 1.0, with: 'é'
                }]
            ),
            "ab\ncdé"
        );
        assert_eq!(
            apply(
                "",
                &[
                    Mutation::Replace { at: 0.5, with: 'x' },
                    Mutation::DuplicateLine { at: 0.5 }
                ]
            ),
            ""
        );
    }
}
