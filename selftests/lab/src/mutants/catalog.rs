//! The catalog of kernel mutants: `selftests/lab/mutants/<name>/*.patch`, each one realistic
//! change to the secondary-MMU aging path with a header saying the bug it models, the
//! observable that must change, the series it applies to and whether the lab can reach it.

use std::fs;
use std::path::{Path, PathBuf};

/// Where the catalog lives.
pub fn catalog_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mutants")
}

/// The test list the mutants run (matrix format, `selftests/lab/mutants/tests.txt`).
pub fn default_tests_file() -> PathBuf {
    catalog_dir().join("tests.txt")
}

/// One mutant of the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutant {
    /// Its directory's name.
    pub name: String,
    /// The patch set directory (given to the build as `--patch DIR`).
    pub dir: PathBuf,
    /// The first patch's `Subject:` without `[MUTANT]`.
    pub subject: String,
    /// The header's `Reach:` paragraph (whether the lab can reach the changed path).
    pub reach: String,
}

impl Mutant {
    /// Whether the header says the lab cannot reach the changed code.
    pub fn unreachable_here(&self) -> bool {
        self.reach
            .to_ascii_lowercase()
            .starts_with("unreachable here")
    }
}

/// The fields of a mutant's header, in the order they are written.
pub const FIELDS: &[&str] = &[
    "From",
    "Subject",
    "Bug modelled",
    "Observable that must change",
    "Series",
    "Reach",
    "Verdict",
];

/// The header field `field:` of a patch: its line and the continuation lines up to the next
/// field of [`FIELDS`], a blank line or the `---` separator.
pub fn header_field(text: &str, field: &str) -> Option<String> {
    let head = text.split("\n---\n").next().unwrap_or(text);
    let mut out: Option<String> = None;
    for line in head.lines() {
        if let Some(acc) = out.as_mut() {
            let starts_field = FIELDS.iter().any(|f| line.starts_with(&format!("{f}:")));
            if starts_field || line.trim().is_empty() {
                break;
            }
            acc.push(' ');
            acc.push_str(line.trim());
        } else if let Some(rest) = line.strip_prefix(&format!("{field}:")) {
            out = Some(rest.trim().to_string());
        }
    }
    out
}

/// Every mutant of `dir` (directories holding `*.patch`), by name.
pub fn read_catalog(dir: &Path) -> std::io::Result<Vec<Mutant>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let path = e?.path();
        if !path.is_dir() {
            continue;
        }
        let mut patches: Vec<PathBuf> = fs::read_dir(&path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "patch"))
            .collect();
        patches.sort();
        let Some(first) = patches.first() else {
            continue;
        };
        let text = fs::read_to_string(first)?;
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        out.push(Mutant {
            subject: header_field(&text, "Subject")
                .map(|s| s.trim_start_matches("[MUTANT]").trim().to_string())
                .unwrap_or_default(),
            reach: header_field(&text, "Reach").unwrap_or_default(),
            name,
            dir: path,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The mutants named in `only` (all when empty), in catalog order; an unknown name is an error
/// naming the known ones.
pub fn select(catalog: &[Mutant], only: &[String]) -> Result<Vec<Mutant>, String> {
    if let Some(unknown) = only.iter().find(|n| !catalog.iter().any(|m| &m.name == *n)) {
        return Err(format!(
            "--mutant {unknown}: no such mutant in the catalog (known: {})",
            catalog
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(catalog
        .iter()
        .filter(|m| only.is_empty() || only.contains(&m.name))
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_has_a_dozen_mutants_each_with_its_header() {
        let catalog = read_catalog(&catalog_dir()).unwrap();
        assert!(catalog.len() >= 12, "{} mutants", catalog.len());
        for m in &catalog {
            let text = fs::read_to_string(
                fs::read_dir(&m.dir)
                    .unwrap()
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .find(|p| p.extension().is_some_and(|x| x == "patch"))
                    .unwrap(),
            )
            .unwrap();
            for field in [
                "Bug modelled",
                "Observable that must change",
                "Series",
                "Reach",
            ] {
                assert!(
                    header_field(&text, field).is_some_and(|v| !v.is_empty()),
                    "{}: no {field}",
                    m.name
                );
            }
            assert!(
                header_field(&text, "Series").unwrap().starts_with("7.2"),
                "{}",
                m.name
            );
            assert!(!m.subject.is_empty() && !m.reach.is_empty(), "{m:?}");
        }
        assert!(catalog.iter().any(Mutant::unreachable_here));
    }

    #[test]
    fn header_fields_span_their_continuation_lines() {
        let text = "Subject: [MUTANT] x: y\n\nBug modelled: one\ntwo.\nObservable that must change: three\nReach: unreachable here: four\nfive.\n---\n--- a/f\n";
        assert_eq!(header_field(text, "Bug modelled").unwrap(), "one two.");
        assert_eq!(
            header_field(text, "Observable that must change").unwrap(),
            "three"
        );
        assert_eq!(
            header_field(text, "Reach").unwrap(),
            "unreachable here: four five."
        );
        assert_eq!(header_field(text, "Series"), None);
    }

    #[test]
    fn unknown_mutants_are_named_with_the_known_ones() {
        let m = |n: &str| Mutant {
            name: n.into(),
            dir: PathBuf::new(),
            subject: String::new(),
            reach: String::new(),
        };
        let catalog = [m("a"), m("b")];
        assert_eq!(select(&catalog, &[]).unwrap().len(), 2);
        assert_eq!(select(&catalog, &["b".into()]).unwrap(), [m("b")]);
        let e = select(&catalog, &["c".into()]).unwrap_err();
        assert!(e.contains("--mutant c") && e.contains("known: a, b"), "{e}");
    }
}
