//! Metric extraction for `agelab ab`: reads what the project's tools print and returns test
//! outcomes and named numbers. Recognised, line by line:
//!
//! - KTAP results, `ok N desc`, `not ok N desc`, with `# SKIP` / `# XFAIL` directives (keyed by
//!   `desc`);
//! - phase lines of the kernel's access_tracking_perf_test style, `NAME<spaces>: 1.234567890s`
//!   (also inside `#` diagnostics), keyed `NAME (s)`;
//! - the selftests' diagnostics: `LABEL: recall X% precision Y% …`, `LABEL: KVM asked M times
//!   for P pages`, slowdown lines `SOURCE idle X ns/access aging Y ns/access ratio R (N passes,
//!   M ms/pass)`, and plain `# key value` / `# key: value` lines (a key of up to 8 words of
//!   letters, `_`, `-`, `'`);
//! - numbers in JSON objects (single-line or pretty-printed), keyed by their path.
//!
//! A key seen again in the same output gets ` #2`, ` #3`, … so repeated passes stay apart.
//! Anything else is ignored; no input makes the extractor panic.

use std::collections::HashMap;

/// A KTAP test result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Outcome {
    /// `ok`.
    Pass,
    /// `not ok`.
    Fail,
    /// `ok … # SKIP` (or `not ok … # SKIP`).
    Skip,
    /// `… # XFAIL`.
    Xfail,
    /// The lab could not run the command (boot failure, timeout); never parsed from output.
    Error,
}

impl Outcome {
    /// Short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "ok",
            Outcome::Fail => "not ok",
            Outcome::Skip => "skip",
            Outcome::Xfail => "xfail",
            Outcome::Error => "lab error",
        }
    }

    /// The outcome of a command's exit status (kselftest convention: 0 pass, 4 skip, 2 xfail).
    pub fn from_exit(status: i32) -> Self {
        match status {
            0 => Outcome::Pass,
            4 => Outcome::Skip,
            2 => Outcome::Xfail,
            _ => Outcome::Fail,
        }
    }
}

/// What one run's output said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extracted {
    /// Test outcomes by description, in output order.
    pub outcomes: Vec<(String, Outcome)>,
    /// Named numbers, in output order.
    pub values: Vec<(String, f64)>,
}

#[derive(Default)]
struct Keys(HashMap<String, usize>);

impl Keys {
    /// `key`, or `key #N` for its N-th occurrence.
    fn unique(&mut self, key: String) -> String {
        let n = self.0.entry(key.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            key
        } else {
            format!("{key} #{n}")
        }
    }
}

/// Extracts outcomes and metrics from a tool's output.
pub fn extract(text: &str) -> Extracted {
    let mut out = Extracted::default();
    let mut keys = Keys::default();
    let mut okeys = Keys::default();
    let mut pos = 0;
    while pos < text.len() {
        let end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
        let line = text[pos..end].trim();
        let next = end + 1;
        if line.starts_with('{') || line.starts_with('[') {
            let start = pos + (text[pos..end].len() - text[pos..end].trim_start().len());
            let mut stream =
                serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
            if let Some(Ok(v)) = stream.next() {
                let mut found = Vec::new();
                flatten_json(&v, "json", &mut found);
                for (k, x) in found {
                    let k = keys.unique(k);
                    out.values.push((k, x));
                }
                let consumed = start + stream.byte_offset();
                // Continue with the line after the value.
                pos = text[consumed..]
                    .find('\n')
                    .map_or(text.len(), |i| consumed + i + 1);
                continue;
            }
        }
        if let Some((desc, o)) = ktap_result(line) {
            out.outcomes.push((okeys.unique(desc), o));
        } else {
            let body = line.strip_prefix('#').map(str::trim);
            for (k, x) in line_metrics(body.unwrap_or(line), body.is_some()) {
                let k = keys.unique(k);
                out.values.push((k, x));
            }
        }
        pos = next;
    }
    out
}

/// `ok N desc # DIRECTIVE` / `not ok N desc` → (desc, outcome).
fn ktap_result(line: &str) -> Option<(String, Outcome)> {
    let (rest, pass) = if let Some(r) = line.strip_prefix("not ok ") {
        (r, false)
    } else {
        (line.strip_prefix("ok ")?, true)
    };
    let (num, desc) = rest.split_once(' ').unwrap_or((rest, ""));
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (desc, directive) = match desc.split_once(" # ") {
        Some((d, dir)) => (d, dir.trim()),
        None => match desc.strip_prefix("# ") {
            Some(dir) => ("", dir.trim()),
            None => (desc, ""),
        },
    };
    let word = directive
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    let outcome = match (word.as_str(), pass) {
        ("SKIP", _) => Outcome::Skip,
        ("XFAIL", _) => Outcome::Xfail,
        (_, true) => Outcome::Pass,
        (_, false) => Outcome::Fail,
    };
    let desc = desc.trim();
    let desc = if desc.is_empty() {
        format!("test {num}")
    } else {
        desc.to_string()
    };
    Some((desc, outcome))
}

/// A leading number of `tok` and what follows it (`100.0%` → (100.0, "%")).
fn number(tok: &str) -> Option<(f64, &str)> {
    let b = tok.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
        i += 1;
    }
    let digits_start = i;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
        i += 1;
    }
    if i == digits_start || !b[digits_start..i].iter().any(u8::is_ascii_digit) {
        return None;
    }
    // An exponent only when digits follow it (`1e-3`), not a unit starting with e.
    if i + 1 < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'-' || b[j] == b'+') {
            j += 1;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            i = j;
        }
    }
    let x: f64 = tok[..i].parse().ok()?;
    x.is_finite().then_some((x, &tok[i..]))
}

/// A value token: a number with at most a short unit (`12`, `1.5s`, `98.0%`, `3.1ns/access`).
fn value(tok: &str) -> Option<(f64, &str)> {
    let tok = tok.trim_end_matches([',', ';', ')']);
    let (x, unit) = number(tok)?;
    let unit_ok = unit.len() <= 12
        && unit
            .chars()
            .all(|c| c.is_ascii_alphabetic() || c == '%' || c == '/');
    unit_ok.then_some((x, unit))
}

/// `NAME: 1.234567890s` → (NAME, seconds).
fn phase(line: &str) -> Option<(String, f64)> {
    let (name, rest) = line.split_once(':')?;
    let (x, unit) = number(rest.trim())?;
    let name = name.trim();
    (unit == "s" && !name.is_empty() && name.chars().any(|c| c.is_ascii_alphabetic()))
        .then(|| (name.to_string(), x))
}

/// `LABEL: …` → LABEL (the whole line when there is no colon).
fn label(body: &str) -> &str {
    body.split_once(':').map_or(body, |(l, _)| l).trim()
}

fn with_unit(key: &str, unit: &str) -> String {
    if unit.is_empty() {
        key.to_string()
    } else {
        format!("{key} ({unit})")
    }
}

/// Metrics of one non-KTAP line; `diag` when it was a `#` diagnostic.
fn line_metrics(body: &str, diag: bool) -> Vec<(String, f64)> {
    if let Some((name, secs)) = phase(body) {
        return vec![(format!("{name} (s)"), secs)];
    }
    if !diag {
        return Vec::new();
    }
    let words: Vec<&str> = body.split_whitespace().collect();
    let mut found = Vec::new();
    // `recall X% precision Y%` and `KVM asked M times for P pages`, named by the line's label.
    for (i, w) in words.iter().enumerate() {
        let next = words.get(i + 1).and_then(|t| value(t));
        match (*w, next) {
            ("recall" | "precision", Some((x, unit))) => {
                found.push((format!("{}: {w}", label(body)), x, unit));
            }
            ("asked", Some((m, _)))
                if i > 0
                    && words[i - 1] == "KVM"
                    && words.get(i + 2) == Some(&"times")
                    && words.get(i + 3) == Some(&"for") =>
            {
                let l = label(body);
                found.push((format!("{l}: KVM calls"), m, ""));
                if let Some((p, _)) = words.get(i + 4).and_then(|t| value(t)) {
                    found.push((format!("{l}: KVM pages"), p, ""));
                }
            }
            _ => {}
        }
    }
    if found.is_empty() && words.contains(&"ratio") && words.len() > 2 {
        // `SOURCE idle X ns/access aging Y ns/access ratio R (N passes, M ms/pass)`
        let source = words[0];
        for (i, w) in words.iter().enumerate().skip(1) {
            let Some((x, unit)) = value(w) else {
                continue;
            };
            // A unit may stand apart: `41.46 ns/access`.
            let apart = words
                .get(i + 1)
                .map(|u| u.trim_end_matches([',', ';', ')']))
                .filter(|u| unit.is_empty() && u.contains('/'));
            let unit = apart.unwrap_or(unit);
            let before = words[i - 1];
            if unit == "ms/pass" {
                found.push((format!("{source} slowdown: time per pass"), x, "ms"));
            } else if before.chars().all(|c| c.is_ascii_alphabetic() || c == '_') {
                found.push((format!("{source} slowdown: {before}"), x, unit));
            }
        }
    }
    if found.is_empty() {
        // `# key value` / `# key: value`: a short key of words without digits, then one value.
        if let Some((last, key_words)) = words.split_last() {
            let key = key_words.join(" ");
            let key = key.trim_end_matches(':').trim();
            let plain = !key.is_empty()
                && key_words.len() <= 8
                && key.chars().any(|c| c.is_ascii_alphabetic())
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphabetic() || " _-'".contains(c));
            if let (true, Some((x, unit))) = (plain, value(last)) {
                found.push((key.to_string(), x, unit));
            }
        }
    }
    found
        .into_iter()
        .map(|(k, x, unit)| (with_unit(&k, unit), x))
        .collect()
}

/// Numbers (and booleans as 0/1) of a JSON value, keyed by their path.
fn flatten_json(v: &serde_json::Value, path: &str, out: &mut Vec<(String, f64)>) {
    use serde_json::Value;
    match v {
        Value::Number(n) => {
            if let Some(x) = n.as_f64().filter(|x| x.is_finite()) {
                out.push((path.to_string(), x));
            }
        }
        Value::Bool(b) => out.push((path.to_string(), f64::from(u8::from(*b)))),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten_json(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                flatten_json(item, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(x: &Extracted, key: &str) -> Option<f64> {
        x.values.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    #[test]
    fn access_tracking_perf_test_on_the_host() {
        // Captured: target/release/access_tracking_perf_test -b 16M on this host (no lru_gen).
        let x = extract(include_str!(
            "../../tests/fixtures/ab/access_tracking_perf_test.host.txt"
        ));
        assert_eq!(get(&x, "Populating memory (s)"), Some(0.021_918_748));
        assert_eq!(get(&x, "Writing to idle memory (s)"), Some(0.000_082_333));
        assert_eq!(x.values.len(), 5, "{:?}", x.values);
        assert_eq!(x.outcomes.len(), 3);
        assert_eq!(
            x.outcomes[1],
            (
                "aging: writes to idle memory seen".to_string(),
                Outcome::Skip
            )
        );
    }

    #[test]
    fn access_tracking_perf_test_in_the_lab() {
        // Captured: agelab ab --base debian-6.12 … -- access_tracking_perf_test -b 16M -v 1,
        // run A-1 (debian-6.12 under QEMU TCG: lru_gen does not see the guest's accesses).
        let x = extract(include_str!(
            "../../tests/fixtures/ab/access_tracking_perf_test.lab-debian-6.12.txt"
        ));
        assert_eq!(get(&x, "Populating memory (s)"), Some(0.081_073));
        assert_eq!(
            get(&x, "Mark memory idle (lru_gen) (s)"),
            Some(0.000_234_531)
        );
        assert_eq!(
            get(&x, "Mark memory idle (lru_gen) (s) #2"),
            Some(0.000_223_816)
        );
        assert_eq!(get(&x, "verification pass (s)"), Some(0.000_290_426));
        let outcomes: Vec<Outcome> = x.outcomes.iter().map(|(_, o)| *o).collect();
        assert_eq!(
            outcomes,
            [Outcome::Pass, Outcome::Fail, Outcome::Fail, Outcome::Pass]
        );
        assert_eq!(
            x.outcomes[1].0,
            "lru_gen: accesses to populated memory seen"
        );
        // `generations seq:pages 2:0 3:4096` and `Too many pages still idle (4096 out of 4096)`
        // and `Created cgroup /access_tracking_perf_test (lru_gen memcg id 2)` are descriptions,
        // not metrics.
        assert_eq!(x.values.len(), 9, "{:?}", x.values);
    }

    #[test]
    fn lru_gen_secondary_mmu_test_slowdown_lines_on_the_host() {
        // Captured: target/release/lru_gen_secondary_mmu_test -b 16M on this host.
        let x = extract(include_str!(
            "../../tests/fixtures/ab/lru_gen_secondary_mmu_test.host.txt"
        ));
        assert_eq!(
            get(&x, "kvm-clear-log slowdown: idle (ns/access)"),
            Some(41.46)
        );
        assert_eq!(
            get(&x, "uffd-minor slowdown: aging (ns/access)"),
            Some(26_244.13)
        );
        assert_eq!(get(&x, "uffd-minor slowdown: ratio"), Some(690.67));
        assert_eq!(
            get(&x, "kvm-clear-log slowdown: time per pass (ms)"),
            Some(0.14)
        );
        assert_eq!(x.outcomes.len(), 7);
        assert_eq!(x.outcomes[5].1, Outcome::Pass);
        assert_eq!(x.outcomes[4].1, Outcome::Skip);
        // The cost header line carries no `key value` pair worth a metric.
        assert!(x.values.iter().all(|(k, _)| !k.contains("guest cost")));
    }

    #[test]
    fn lru_gen_secondary_mmu_test_in_the_lab() {
        // Captured: agelab ab --kernel debian-7.2 --append-a kvm.tdp_mmu=Y … with
        // lru_gen_secondary_mmu_test -b 16M -n, run A-1 (QEMU TCG, nested KVM).
        let x = extract(include_str!(
            "../../tests/fixtures/ab/lru_gen_secondary_mmu_test.lab-debian-7.2.txt"
        ));
        let keys: Vec<&str> = x.values.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "aging pass 0: KVM calls",
                "aging pass 0: KVM pages",
                "aging pass 0: KVM calls #2",
                "aging pass 0: KVM pages #2",
                "aging pass 1: KVM calls",
                "aging pass 1: KVM pages",
                "aging pass 1 after the guest read A only: recall (%)",
                "aging pass 1 after the guest read A only: precision (%)",
                "aging pass 2: KVM calls",
                "aging pass 2: KVM pages",
                "aging pass 2 after the guest read B only: recall (%)",
                "aging pass 2 after the guest read B only: precision (%)",
                "aging set A's memcg after the guest read it: KVM calls",
                "aging set A's memcg after the guest read it: KVM pages",
            ]
        );
        assert_eq!(
            get(
                &x,
                "aging pass 1 after the guest read A only: precision (%)"
            ),
            Some(100.0)
        );
        assert_eq!(x.outcomes.len(), 3);
        assert!(x.outcomes.iter().all(|(_, o)| *o == Outcome::Fail));
    }

    #[test]
    fn recall_precision_and_kvm_calls() {
        let text = "# aging pass 0: KVM asked 4 times for 8192 pages (4 clear_young, 0 test_young)\n\
                    # aging pass 0: KVM asked 2 times for 10 pages (2 clear_young, 0 test_young)\n\
                    # aging pass 1 after the guest read A only: recall 98.5% precision 100.0% (young 1009 of 1024 touched, 0 untouched)\n\
                    # aging set A's memcg after the guest read it: KVM asked 3 times for 1024 pages; expected > 0\n";
        let x = extract(text);
        assert_eq!(get(&x, "aging pass 0: KVM calls"), Some(4.0));
        assert_eq!(get(&x, "aging pass 0: KVM pages #2"), Some(10.0));
        assert_eq!(
            get(&x, "aging pass 1 after the guest read A only: recall (%)"),
            Some(98.5)
        );
        assert_eq!(
            get(
                &x,
                "aging pass 1 after the guest read A only: precision (%)"
            ),
            Some(100.0)
        );
        assert_eq!(
            get(&x, "aging set A's memcg after the guest read it: KVM pages"),
            Some(1024.0)
        );
        assert_eq!(x.values.len(), 8, "{:?}", x.values);
    }

    #[test]
    fn ktap_directives_and_plain_diagnostics() {
        let text =
            "TAP version 13\n1..4\nok 1 a\nnot ok 2 b\nnot ok 3 c # XFAIL known\nok 4 # SKIP why\n\
                    # Totals: pass:1 fail:1 xfail:1 xpass:0 skip:1 error:0\n\
                    # verification pass: 0.25s\n# pages scanned 4096\n# rss: 12.5MiB\n\
                    not ok x\nokay 5\n";
        let x = extract(text);
        assert_eq!(
            x.outcomes,
            [
                ("a".to_string(), Outcome::Pass),
                ("b".to_string(), Outcome::Fail),
                ("c".to_string(), Outcome::Xfail),
                ("test 4".to_string(), Outcome::Skip),
            ]
        );
        assert_eq!(get(&x, "verification pass (s)"), Some(0.25));
        assert_eq!(get(&x, "pages scanned"), Some(4096.0));
        assert_eq!(get(&x, "rss (MiB)"), Some(12.5));
        assert_eq!(x.values.len(), 3, "{:?}", x.values);
    }

    #[test]
    fn json_objects_single_line_and_pretty() {
        let text = "before\n{\"a\": 1, \"b\": {\"c\": [2.5, true]}, \"s\": \"x\"}\n{\n  \"ms\": 3,\n  \"n\": null\n}\n{not json\nok 1 after\n";
        let x = extract(text);
        assert_eq!(
            x.values,
            [
                ("json.a".to_string(), 1.0),
                ("json.b.c[0]".to_string(), 2.5),
                ("json.b.c[1]".to_string(), 1.0),
                ("json.ms".to_string(), 3.0),
            ]
        );
        assert_eq!(x.outcomes, [("after".to_string(), Outcome::Pass)]);
    }

    #[test]
    fn numbers_and_units() {
        assert_eq!(number("1.5s"), Some((1.5, "s")));
        assert_eq!(number("-2e-3x"), Some((-0.002, "x")));
        assert_eq!(number("3each"), Some((3.0, "each")));
        assert_eq!(number("."), None);
        assert_eq!(number("abc"), None);
        assert_eq!(value("98.0%,"), Some((98.0, "%")));
        assert_eq!(value("0x0007"), None);
    }

    /// KTAP and kselftest output captured on the host and in the lab, with up to 8 arbitrary
    /// mutations each (lines cut, repeated, characters replaced, text inserted): no panic, and
    /// every outcome comes from a line of the text.
    #[test]
    fn mutated_captured_outputs_are_parsed_without_panic() {
        const FIXTURES: &[&str] = &[
            include_str!("../../tests/fixtures/ab/access_tracking_perf_test.host.txt"),
            include_str!("../../tests/fixtures/ab/access_tracking_perf_test.lab-debian-6.12.txt"),
            include_str!("../../tests/fixtures/ab/lru_gen_secondary_mmu_test.host.txt"),
            include_str!("../../tests/fixtures/ab/lru_gen_secondary_mmu_test.lab-debian-7.2.txt"),
        ];
        crate::fuzz::run_cases(
            "ab metrics (KTAP) mutated captures",
            1024,
            crate::fuzz::mutated(FIXTURES),
            |s| {
                let x = extract(&s);
                proptest::prop_assert!(x.outcomes.len() <= s.lines().count());
                Ok(())
            },
        );
    }

    proptest::proptest! {
        // Arbitrary text, and text built from the pieces the extractor looks for: no panic.
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,300}") {
            let _ = extract(&s);
        }

        #[test]
        fn near_miss_text_never_panics(s in "(ok |not ok |# |\\{|\\[|\\}|\"|: |recall |KVM asked |times for |ratio |[0-9.e-]{1,6}|[a-z%/]{1,4}| |\n){0,60}") {
            let _ = extract(&s);
        }
    }
}
