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
}
