//! Large-folio backings in the selftests: the size turned on for the test (journaled) and the
//! check that guest memory really sits in folios of the backing's size.

use crate::ktap::{self, Ktap, TestId};
use agelab_mglru::host_guard::RestoreGuard;
use agelab_mglru::large_folios::{census, prepare};
use agelab_vmm::{Backing, GuestPageMap};

/// Smallest share of present guest pages that must sit in folios of the backing's size: the
/// kernel may fall back to smaller folios when it cannot allocate (`anon_fault_fallback`).
pub const FOLIO_SHARE_MIN: f64 = 0.9;

/// Turns the backing's folio size on for the test: `None` for other backings or a size already
/// on. Skips the whole test when the kernel lacks that size; fails when the knob cannot be set.
pub fn prepare_backing(backing: &Backing) -> Option<RestoreGuard> {
    match prepare(backing) {
        Ok((guard, note)) => {
            if !note.is_empty() {
                ktap::diag(&note);
            }
            guard
        }
        Err(e) if e.is_missing_feature() => ktap::skip_all(&e.to_string()),
        Err(e) => ktap::fail(&e.to_string()),
    }
}

/// Whether the test checks the folios of `backing` (backings that decide their folio size).
pub fn checks_folios(backing: &Backing) -> bool {
    backing.folio_bytes().is_some()
}

/// Counts the folios the guest's memory sits in and judges test `id`: at least
/// [`FOLIO_SHARE_MIN`] of present pages in folios of the backing's size.
pub fn check_folios(k: &mut Ktap, id: TestId, backing: &Backing, map: &GuestPageMap) {
    let Some(want) = backing.folio_bytes() else {
        k.skip(id, "the backing does not decide its folio size");
        return;
    };
    match census(map) {
        Ok(c) => {
            let share = c.share_in(want);
            k.diag(&format!(
                "{backing} folios: {}; {:.1}% of present pages in {} KiB folios (need {:.0}%)",
                c.describe(),
                share * 100.0,
                want >> 10,
                FOLIO_SHARE_MIN * 100.0
            ));
            k.result(id, c.present() > 0 && share >= FOLIO_SHARE_MIN);
        }
        Err(e) => {
            k.diag(&format!("counting folios: {e}"));
            k.result(id, false);
        }
    }
}
