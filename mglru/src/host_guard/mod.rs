//! Restoring host state on every exit path.
//!
//! agelab changes host-wide state (zram swap, memcgs, lru_gen caps, `min_ttl_ms`, kdamonds). A
//! run that dies on a panic, SIGINT or SIGTERM must not leave the host aging differently than
//! before, so every such change registers its undo here and keeps a [`RestoreGuard`]. Normal exit
//! drops the guard (runs the undo now); a signal or a panic runs every pending undo in reverse
//! order of registration.
//!
//! Host changes go through [`HostRestore::record`] / [`HostRestore::set_knob`], which first write
//! the change to the [`journal`](crate::journal) under `/run/agelab`: what SIGKILL, an OOM kill or
//! a crash leaves behind is undone by the next agelab command ([`install_signal_cleanup`]
//! reconciles first) or `agelab cleanup`. [`HostRestore::register`] (closure, no journal) is only
//! for state that dies with the process (userfaultfd registrations).

mod error;

pub use error::HostGuardError;

use crate::journal::{HostChange, Journal, JournalError, Recorded};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

enum Undo {
    /// Process-local state: gone with the process anyway.
    Local(Box<dyn FnOnce() + Send + 'static>),
    /// A journaled host change.
    Journaled(Recorded),
}

impl Undo {
    fn run(self) -> Result<(), JournalError> {
        match self {
            Undo::Local(f) => {
                f();
                Ok(())
            }
            Undo::Journaled(rec) => Journal::at(&rec.journal).undo(&rec).map(|_| ()),
        }
    }
}

struct Entry {
    id: u64,
    description: String,
    undo: Undo,
}

static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static SIGNAL_THREAD: Once = Once::new();
static PANIC_HOOK: Once = Once::new();

// A poisoned registry only means an undo panicked; the remaining entries are still valid and must
// still run, so poisoning is ignored rather than propagated.
fn registry() -> MutexGuard<'static, Vec<Entry>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The process-wide registry of undo actions.
#[derive(Debug)]
pub struct HostRestore;

impl HostRestore {
    /// Registers `undo` (described as `description`) for state that dies with the process, and
    /// returns the guard that runs it when dropped. Host state uses [`record`](Self::record).
    pub fn register(
        description: impl Into<String>,
        undo: impl FnOnce() + Send + 'static,
    ) -> RestoreGuard {
        Self::push(description.into(), Undo::Local(Box::new(undo)))
    }

    /// Journals `change` (described as `description`) *before* the caller makes it, and returns
    /// the guard that undoes it when dropped. The undo must be harmless if the change was never
    /// (or only partly) made: a kill can land between the record and the change.
    pub fn record(
        description: impl Into<String>,
        change: HostChange,
    ) -> Result<RestoreGuard, HostGuardError> {
        let description = description.into();
        let rec = Journal::system().record(&description, change)?;
        Ok(Self::push(description, Undo::Journaled(rec)))
    }

    /// Journals and writes a knob (`what`, e.g. "lru_gen enabled") for the run; the guard writes
    /// back the value found before any live agelab process changed it. Returns the guard and that
    /// value.
    pub fn set_knob(
        what: &str,
        path: &Path,
        value: &str,
    ) -> Result<(RestoreGuard, String), HostGuardError> {
        let (rec, prev) = Journal::system().set_knob(what, path, value)?;
        let description = format!("{what} {value} -> {prev}");
        Ok((Self::push(description, Undo::Journaled(rec)), prev))
    }

    fn push(description: String, undo: Undo) -> RestoreGuard {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        registry().push(Entry {
            id,
            description: description.clone(),
            undo,
        });
        RestoreGuard { id, description }
    }

    /// Descriptions of the undo actions not yet run, oldest first.
    pub fn pending() -> Vec<String> {
        registry().iter().map(|e| e.description.clone()).collect()
    }
}

/// Runs every pending undo, newest first, and returns their descriptions in the order run.
///
/// Meant for panic hooks and fatal-error paths; guards whose undo already ran here do nothing when
/// dropped later.
pub fn run_pending() -> Vec<String> {
    // Take the entries out before running them: an undo may itself register or drop guards.
    let entries: Vec<Entry> = std::mem::take(&mut *registry());
    let mut done = Vec::with_capacity(entries.len());
    for e in entries.into_iter().rev() {
        if let Err(err) = e.undo.run() {
            eprintln!("agelab: restoring {}: {err}", e.description);
        }
        done.push(e.description);
    }
    done
}

/// Owner of one registered undo action: dropping it runs the undo (once) and unregisters it.
#[derive(Debug)]
#[must_use = "dropping the guard immediately runs the undo"]
pub struct RestoreGuard {
    id: u64,
    description: String,
}

impl RestoreGuard {
    /// What this guard restores.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether the undo is still pending (false once a signal or [`run_pending`] ran it).
    pub fn is_pending(&self) -> bool {
        registry().iter().any(|e| e.id == self.id)
    }

    /// Unregisters the undo without running it (the state was restored some other way); a
    /// journaled change's entry is removed.
    pub fn dismiss(self) {
        if let Some(Entry {
            undo: Undo::Journaled(rec),
            ..
        }) = self.take()
        {
            if let Err(e) = Journal::at(&rec.journal).forget(&rec) {
                eprintln!("agelab: {e}");
            }
        }
        std::mem::forget(self);
    }

    /// Runs the undo now and reports its error (dropping the guard only prints it). A journaled
    /// change whose undo fails keeps its entry for the next reconcile.
    pub fn restore(self) -> Result<(), HostGuardError> {
        let e = self.take();
        std::mem::forget(self);
        match e {
            Some(e) => Ok(e.undo.run()?),
            None => Ok(()),
        }
    }

    fn take(&self) -> Option<Entry> {
        let mut reg = registry();
        let pos = reg.iter().position(|e| e.id == self.id)?;
        Some(reg.remove(pos))
    }
}

impl Drop for RestoreGuard {
    fn drop(&mut self) {
        if let Some(e) = self.take() {
            if let Err(err) = e.undo.run() {
                eprintln!("agelab: restoring {}: {err}", e.description);
            }
        }
    }
}

const CLEANUP_SIGNALS: [nix::sys::signal::Signal; 3] = [
    nix::sys::signal::Signal::SIGINT,
    nix::sys::signal::Signal::SIGTERM,
    nix::sys::signal::Signal::SIGHUP,
];

/// Reconciles the host-change journal (undoes what agelab processes that are gone left behind,
/// one stderr line each), then blocks SIGINT/SIGTERM/SIGHUP in the calling thread and starts a
/// thread that waits for them, runs every pending undo in reverse order, reports them on stderr
/// and exits with 128 + signo.
///
/// Call it first thing in `main`, before any other thread exists: threads inherit the signal mask,
/// so the cleanup thread is then the only one that ever receives these signals. Calling it again is
/// a no-op.
pub fn install_signal_cleanup() -> Result<(), HostGuardError> {
    let mut result = Ok(());
    SIGNAL_THREAD.call_once(|| {
        crate::journal::reconcile_at_start("agelab");
        result = start_signal_thread();
    });
    result
}

fn start_signal_thread() -> Result<(), HostGuardError> {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
    let mut set = SigSet::empty();
    for s in CLEANUP_SIGNALS {
        set.add(s);
    }
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(HostGuardError::SigMask)?;
    std::thread::Builder::new()
        .name("host-restore".into())
        .spawn(move || loop {
            let Ok(sig) = set.wait() else { continue };
            let restored = run_pending();
            for d in &restored {
                eprintln!("agelab: {sig}: restored {d}");
            }
            if restored.is_empty() {
                eprintln!("agelab: {sig}: no host state to restore");
            }
            std::process::exit(128 + sig as i32);
        })
        .map_err(HostGuardError::Spawn)?;
    Ok(())
}

/// Chains a panic hook that runs every pending undo (after the previous hook printed the panic).
pub fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            prev(info);
            for d in run_pending() {
                eprintln!("agelab: panic: restored {d}");
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn drop_runs_once_and_dismiss_skips() {
        let n = Arc::new(AtomicUsize::new(0));
        let c = n.clone();
        let g = HostRestore::register("count", move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert!(g.is_pending());
        drop(g);
        assert_eq!(n.load(Ordering::SeqCst), 1);
        let c = n.clone();
        let g = HostRestore::register("skip", move || {
            c.fetch_add(10, Ordering::SeqCst);
        });
        g.dismiss();
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }
}
