//! Undoing a journaled change, on the kernel interfaces that know how (the bottom layer: none of
//! them imports the journal or the host guard).

use super::entry::HostChange;
use super::error::JournalError;
use crate::kernel::swap::undo_zram;
use crate::kernel::sysfs::write_str;
use crate::kernel::undo::{remove_cgroup, undo_kdamond};

impl HostChange {
    /// Undoes the change; returns what was done.
    pub(super) fn undo(&self) -> Result<String, JournalError> {
        let fail = |why: String| JournalError::Undo {
            what: self.to_string(),
            why,
        };
        match self {
            HostChange::ZramSwap { index, hot_added } => {
                undo_zram(*index, *hot_added).map_err(|e| fail(e.to_string()))
            }
            HostChange::Memcg { dir, parent_dir } => {
                if !dir.exists() {
                    return Ok(format!("memcg {} already gone", dir.display()));
                }
                remove_cgroup(dir, parent_dir)
                    .map(|()| format!("memcg {} removed", dir.display()))
                    .map_err(|e| fail(e.to_string()))
            }
            HostChange::Knob { path, restore } => write_str(path, restore)
                .map(|()| format!("{} = {restore}", path.display()))
                .map_err(|e| fail(e.to_string())),
            HostChange::Kdamond {
                dir,
                nr_path,
                target,
            } => undo_kdamond(dir, nr_path, target.as_deref()).map_err(|e| fail(e.to_string())),
        }
    }
}
