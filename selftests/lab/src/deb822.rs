//! Debian control-file syntax: deb822 paragraphs (`apt-cache show`, `*.sources`) and relation
//! fields (`Depends:`).

/// One deb822 paragraph: fields in file order, names compared case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paragraph {
    fields: Vec<(String, String)>,
}

impl Paragraph {
    /// The value of field `name` (continuation lines joined with `\n`), if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The whitespace-separated words of field `name`; empty when the field is absent.
    pub fn words(&self, name: &str) -> Vec<&str> {
        self.get(name)
            .map(|v| v.split_whitespace().collect())
            .unwrap_or_default()
    }
}

/// Parses deb822 text into paragraphs; `#` comment lines are skipped, blank lines separate.
pub fn parse_paragraphs(text: &str) -> Vec<Paragraph> {
    let mut out = Vec::new();
    let mut cur = Paragraph::default();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.fields.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some((_, v)) = cur.fields.last_mut() {
                let cont = line.trim();
                if cont != "." {
                    if !v.is_empty() {
                        v.push('\n');
                    }
                    v.push_str(cont);
                }
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            cur.fields
                .push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    if !cur.fields.is_empty() {
        out.push(cur);
    }
    out
}

/// One package relation, e.g. `linux-image-7.2.13+deb14-amd64 (= 7.2.13-1)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Package name, without any `:arch` qualifier.
    pub name: String,
    /// Version constraint, e.g. `("=", "7.2.13-1")`.
    pub version: Option<(String, String)>,
}

/// Parses a relation field into its AND-list of OR-alternatives.
pub fn parse_relations(field: &str) -> Vec<Vec<Relation>> {
    field
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|group| group.split('|').filter_map(parse_relation).collect())
        .collect()
}

fn parse_relation(text: &str) -> Option<Relation> {
    let text = text.trim();
    let name_end = text
        .find(|c: char| c.is_whitespace() || c == '(' || c == '[' || c == '<')
        .unwrap_or(text.len());
    let name = text[..name_end].split(':').next()?.to_string();
    if name.is_empty() {
        return None;
    }
    let version = text[name_end..]
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(inner, _)| {
            let inner = inner.trim();
            let op_end = inner.find(|c: char| !"<>=".contains(c))?;
            Some((
                inner[..op_end].to_string(),
                inner[op_end..].trim().to_string(),
            ))
        });
    Some(Relation { name, version })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_with_comments_and_continuations() {
        let text = "Types: deb\n# a comment\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n\
                    Description: first\n second\n .\n third\n\n\nTypes: deb\nURIs: http://x.invalid/sec\n";
        let ps = parse_paragraphs(text);
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].words("suites"), ["bookworm", "bookworm-updates"]);
        assert_eq!(ps[0].get("Description"), Some("first\nsecond\nthird"));
        assert_eq!(ps[1].get("URIS"), Some("http://x.invalid/sec"));
        assert_eq!(ps[1].get("Suites"), None);
    }

    #[test]
    fn relations_with_alternatives_versions_and_arch() {
        let rel = parse_relations(
            "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, \
             linux-binary-7.2.13+deb14-amd64 (= 7.2.13-1), libc6:amd64 [amd64]",
        );
        assert_eq!(rel.len(), 3);
        assert_eq!(rel[0].len(), 3);
        assert_eq!(rel[0][1].name, "initramfs-tools");
        assert_eq!(
            rel[0][1].version,
            Some((">=".into(), "0.120+deb8u2".into()))
        );
        assert_eq!(rel[1][0].name, "linux-binary-7.2.13+deb14-amd64");
        assert_eq!(rel[1][0].version, Some(("=".into(), "7.2.13-1".into())));
        assert_eq!(rel[2][0].name, "libc6");
        assert_eq!(rel[2][0].version, None);
    }

    /// Captured real deb822 text: `apt-cache show` of the sid kernel, linux-source and busybox
    /// paragraphs, the head and signature of sid's InRelease (a Release stanza inside PGP
    /// armour), and this host's `debian.sources` (mirror names replaced).
    const FIXTURES: &[&str] = &[
        include_str!("../tests/fixtures/deb822/apt-cache-show-sid.txt"),
        include_str!("../tests/fixtures/deb822/sid-InRelease-excerpt.txt"),
        include_str!("../tests/fixtures/deb822/host-debian.sources"),
    ];

    /// deb822 text as written by Debian's tools: `Key: first line`, continuation lines indented
    /// by one space, paragraphs separated by a blank line.
    fn render(paragraphs: &[Vec<(String, String)>]) -> String {
        let mut out = String::new();
        for p in paragraphs {
            for (k, v) in p {
                let mut lines = v.split('\n');
                out.push_str(&format!("{k}: {}\n", lines.next().unwrap_or_default()));
                for l in lines {
                    out.push_str(&format!(" {l}\n"));
                }
            }
            out.push('\n');
        }
        out
    }

    /// A field value: a first line and continuation lines, none blank, none `.`, no edge blanks.
    fn value() -> impl proptest::strategy::Strategy<Value = String> {
        let line = "[!-~é中]([ !-~é中]{0,24}[!-~é中])?";
        proptest::collection::vec(line, 1..4)
            .prop_filter("`.` is deb822's empty line", |ls| {
                ls.iter().all(|l| l != ".")
            })
            .prop_map(|ls| ls.join("\n"))
    }

    use proptest::prelude::*;

    #[test]
    fn arbitrary_text_is_parsed_without_panic() {
        crate::fuzz::run_cases(
            "deb822 arbitrary text",
            2048,
            "(\\PC|[\n\t :#.]){0,200}",
            |s| {
                for p in parse_paragraphs(&s) {
                    prop_assert!(!p.fields.is_empty(), "empty paragraph from {s:?}");
                    let _ = p.words("Depends");
                }
                Ok(())
            },
        );
    }

    #[test]
    fn mutated_real_paragraphs_are_parsed_without_panic() {
        crate::fuzz::run_cases(
            "deb822 mutated captures",
            2048,
            crate::fuzz::mutated(FIXTURES),
            |s| {
                for p in parse_paragraphs(&s) {
                    for field in ["Depends", "Suites", "Size", "Version"] {
                        let _ = p.words(field);
                        let _ = p.get(field).map(parse_relations);
                    }
                }
                Ok(())
            },
        );
    }

    #[test]
    fn arbitrary_relation_fields_give_named_relations() {
        crate::fuzz::run_cases(
            "deb822 relations",
            2048,
            "([a-z0-9.+-]{0,8}|:[a-z0-9]{0,5}| |,|\\||\\(|\\)|<<|>=|=|\\[|\\]|~|\\PC){0,40}",
            |s| {
                for group in parse_relations(&s) {
                    for r in group {
                        prop_assert!(!r.name.is_empty(), "{s:?}");
                        prop_assert!(
                            !r.name
                                .contains(|c: char| c.is_whitespace() || ",|(:".contains(c)),
                            "{s:?} gave name {:?}",
                            r.name
                        );
                    }
                }
                Ok(())
            },
        );
        // The captured relation fields parse in full.
        for p in parse_paragraphs(FIXTURES[0]) {
            for field in ["Depends", "Recommends", "Suggests", "Breaks"] {
                if let Some(v) = p.get(field) {
                    assert_eq!(parse_relations(v).len(), v.split(',').count(), "{v}");
                }
            }
        }
    }

    #[test]
    fn rendered_paragraphs_round_trip() {
        let key = "[A-Za-z][A-Za-z0-9-]{0,15}";
        let paragraph = proptest::collection::vec((key, value()), 1..6);
        crate::fuzz::run_cases(
            "deb822 render/parse round trip",
            1024,
            proptest::collection::vec(paragraph, 0..4),
            |ps| {
                let text = render(&ps);
                let parsed = parse_paragraphs(&text);
                let want: Vec<Paragraph> = ps
                    .iter()
                    .map(|fields| Paragraph {
                        fields: fields.clone(),
                    })
                    .collect();
                prop_assert_eq!(&parsed, &want, "text:\n{}", text);
                // Names are case-insensitive: the first field of each paragraph, asked for in
                // upper case, is found.
                for (p, fields) in parsed.iter().zip(&ps) {
                    let (k, v) = &fields[0];
                    let first = fields.iter().find(|(f, _)| f.eq_ignore_ascii_case(k));
                    prop_assert_eq!(p.get(&k.to_uppercase()), first.map(|(_, v)| v.as_str()));
                    prop_assert_eq!(first.map(|(_, v)| v), Some(v));
                }
                Ok(())
            },
        );
    }
}
