//! The Kconfig fragment of a custom build: the lab's fragment, `--config` merged over it, and
//! what `olddefconfig` did not keep.

/// `CONFIG_X=y` lines of a fragment (comments and blank lines dropped).
pub fn fragment_options(fragment: &str) -> Vec<&str> {
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_"))
        .collect()
}

/// Fragment options that the final `.config` text does not contain verbatim, and
/// `# CONFIG_X is not set` lines whose symbol the config sets after all.
pub fn missing_options<'a>(fragment: &'a str, config: &str) -> Vec<&'a str> {
    let have: std::collections::HashSet<&str> = config.lines().map(str::trim).collect();
    let set: std::collections::HashSet<&str> = config
        .lines()
        .filter_map(|l| l.trim().split_once('=').map(|(s, _)| s))
        .collect();
    let mut out: Vec<&str> = fragment_options(fragment)
        .into_iter()
        .filter(|o| !have.contains(o))
        .collect();
    out.extend(fragment.lines().map(str::trim).filter(|l| {
        l.starts_with("# CONFIG_") && fragment_symbol(l).is_some_and(|s| set.contains(s))
    }));
    out
}

/// The Kconfig symbol a fragment line sets (`CONFIG_X=..` or `# CONFIG_X is not set`).
fn fragment_symbol(line: &str) -> Option<&str> {
    let l = line.trim();
    if let Some(rest) = l.strip_prefix("# ") {
        return rest
            .strip_suffix(" is not set")
            .filter(|s| s.starts_with("CONFIG_"));
    }
    l.starts_with("CONFIG_")
        .then(|| l.split_once('=').map(|(s, _)| s))
        .flatten()
}

/// Checks a `--config` fragment: every line is blank, a comment, `CONFIG_X=value` or
/// `# CONFIG_X is not set`; returns the line number and text of the first bad line.
pub fn check_fragment(text: &str) -> Result<(), (usize, String)> {
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        let valid_sym = |s: &str| {
            s.len() > 7
                && s[7..]
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        };
        let ok = l.is_empty()
            || match fragment_symbol(l) {
                Some(s) => valid_sym(s),
                None => l.starts_with('#') && !l.contains("CONFIG_"),
            };
        if !ok {
            return Err((i + 1, line.to_string()));
        }
    }
    Ok(())
}

/// The lab's fragment with `extra` merged over it: lines of `base` whose symbol `extra` sets are
/// dropped, then `extra` follows. With no extra options `base` comes back unchanged.
pub fn merge_fragments(base: &str, extra: &str) -> String {
    if extra.trim().is_empty() {
        return base.to_string();
    }
    let overridden: std::collections::HashSet<&str> =
        extra.lines().filter_map(fragment_symbol).collect();
    let mut out: String = base
        .lines()
        .filter(|l| fragment_symbol(l).is_none_or(|s| !overridden.contains(s)))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str("# --config\n");
    out.push_str(extra);
    if !extra.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_missing() {
        let frag = "# comment\nCONFIG_A=y\n\nCONFIG_B=8\nCONFIG_C=y\n";
        assert_eq!(
            fragment_options(frag),
            ["CONFIG_A=y", "CONFIG_B=8", "CONFIG_C=y"]
        );
        let config = "CONFIG_A=y\nCONFIG_B=8\n# CONFIG_C is not set\n";
        assert_eq!(missing_options(frag, config), ["CONFIG_C=y"]);
    }

    #[test]
    fn fragments_merge_with_the_extra_options_winning() {
        let base = "# lab\nCONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n";
        assert_eq!(merge_fragments(base, ""), base);
        let merged = merge_fragments(base, "# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_D=8");
        assert_eq!(
            merged,
            "# lab\nCONFIG_A=y\n# --config\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_D=8\n"
        );
        // Options lost after olddefconfig are reported by name, both ways.
        let config = "CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\n";
        assert_eq!(
            missing_options(&merged, config),
            ["CONFIG_D=8", "# CONFIG_B is not set"]
        );
        assert!(check_fragment("# c\n\nCONFIG_X_1=m\n# CONFIG_Y is not set\n").is_ok());
        assert_eq!(check_fragment("CONFIG_a=y").unwrap_err().0, 1);
        assert_eq!(check_fragment("\n# CONFIG_Y is off").unwrap_err().0, 2);
    }

    #[test]
    fn the_x86_fragment_has_what_the_lab_promises() {
        let frag = crate::arch::find_arch("x86_64").unwrap().custom_config;
        let opts = fragment_options(frag);
        for o in [
            "CONFIG_LRU_GEN=y",
            "CONFIG_LRU_GEN_ENABLED=y",
            "CONFIG_IDLE_PAGE_TRACKING=y",
            "CONFIG_DAMON_SYSFS=y",
            "CONFIG_KVM_AMD=y",
            "CONFIG_KVM_INTEL=y",
            "CONFIG_ZRAM=y",
            "CONFIG_USERFAULTFD=y",
        ] {
            assert!(
                opts.contains(&o),
                "{o} missing from the custom kernel fragment"
            );
        }
    }
}
