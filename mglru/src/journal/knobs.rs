//! The host files agelab changes and the journal restores, in one place: the engine's kernel
//! interfaces write them, the selftests read them back to check they were restored.

/// lru_gen's sysfs directory.
pub const LRU_GEN_DIR: &str = "/sys/kernel/mm/lru_gen";
/// lru_gen's capability switch (`enabled`, in [`LRU_GEN_DIR`]).
pub const LRU_GEN_ENABLED: &str = "/sys/kernel/mm/lru_gen/enabled";
/// lru_gen's thrashing-prevention knob (`min_ttl_ms`, in [`LRU_GEN_DIR`]).
pub const LRU_GEN_MIN_TTL_MS: &str = "/sys/kernel/mm/lru_gen/min_ttl_ms";
/// DAMON's sysfs admin tree.
pub const DAMON_ADMIN: &str = "/sys/kernel/mm/damon/admin";
/// DAMON's sysfs kdamonds directory (`kdamonds`, in [`DAMON_ADMIN`]).
pub const DAMON_KDAMONDS: &str = "/sys/kernel/mm/damon/admin/kdamonds";
/// The DAMON modules that run a kdamond of their own when enabled.
pub const DAMON_MODULES: [&str; 3] = ["damon_stat", "damon_reclaim", "damon_lru_sort"];
/// The cgroup file through which a parent delegates controllers (`memory`) to its children.
pub const CGROUP_SUBTREE_CONTROL: &str = "cgroup.subtree_control";
/// The cgroup v2 root.
pub const CGROUP_V2_ROOT: &str = "/sys/fs/cgroup";
/// The cgroup v2 root's [`CGROUP_SUBTREE_CONTROL`].
pub const CGROUP_V2_ROOT_SUBTREE_CONTROL: &str = "/sys/fs/cgroup/cgroup.subtree_control";
/// damon_stat's `enabled` parameter ([`damon_module_enabled`] of `damon_stat`).
pub const DAMON_STAT_ENABLED: &str = "/sys/module/damon_stat/parameters/enabled";

/// A DAMON module's `enabled` parameter, e.g. `damon_stat`'s.
pub fn damon_module_enabled(module: &str) -> String {
    format!("/sys/module/{module}/parameters/enabled")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn knob_files_are_in_their_directories() {
        assert_eq!(
            Path::new(LRU_GEN_ENABLED),
            Path::new(LRU_GEN_DIR).join("enabled")
        );
        assert_eq!(
            Path::new(LRU_GEN_MIN_TTL_MS),
            Path::new(LRU_GEN_DIR).join("min_ttl_ms")
        );
        assert_eq!(
            Path::new(DAMON_KDAMONDS),
            Path::new(DAMON_ADMIN).join("kdamonds")
        );
        assert_eq!(damon_module_enabled("damon_stat"), DAMON_STAT_ENABLED);
        assert_eq!(
            Path::new(CGROUP_V2_ROOT_SUBTREE_CONTROL),
            Path::new(CGROUP_V2_ROOT).join(CGROUP_SUBTREE_CONTROL)
        );
    }
}

/// The value to write back to restore a knob that read `text`: the selected word of a choice
/// knob (`always inherit [madvise] never` → `madvise`), which refuses its whole line, else the
/// text itself.
pub fn restorable_value(text: &str) -> String {
    let t = text.trim();
    t.find('[')
        .and_then(|start| {
            let end = t[start..].find(']')? + start;
            Some(t[start + 1..end].to_string())
        })
        .unwrap_or_else(|| t.to_string())
}

#[cfg(test)]
mod choice_tests {
    use super::restorable_value;

    #[test]
    fn a_choice_knob_restores_its_selected_word_and_a_value_knob_its_text() {
        assert_eq!(
            restorable_value("always inherit [madvise] never\n"),
            "madvise"
        );
        assert_eq!(restorable_value("[never] always"), "never");
        assert_eq!(restorable_value("0x0007\n"), "0x0007");
        assert_eq!(restorable_value("1000"), "1000");
    }
}
