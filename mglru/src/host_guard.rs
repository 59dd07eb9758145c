//! Restoring host state on every exit path.
//!
//! agelab changes host-wide knobs (lru_gen caps, `min_ttl_ms`, memcgs, kdamonds). A run that dies
//! on a panic, SIGINT or SIGTERM must not leave the host aging differently than before, so every such
//! change registers its undo here and keeps a [`RestoreGuard`]. Normal exit drops the guard (runs the
//! undo now); a signal or a panic runs every pending undo in reverse order of registration.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

type Undo = Box<dyn FnOnce() + Send + 'static>;

struct Entry {
    id: u64,
    description: String,
    undo: Undo,
}

static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static SIGNAL_THREAD: Once = Once::new();
static PANIC_HOOK: Once = Once::new();

/// Errors from setting up signal cleanup.
#[derive(Debug, thiserror::Error)]
pub enum HostGuardError {
    /// `pthread_sigmask` refused to block the cleanup signals.
    #[error("blocking SIGINT/SIGTERM/SIGHUP in the main thread: {0}")]
    SigMask(#[source] nix::Error),
    /// The cleanup thread could not be started.
    #[error("spawning the signal cleanup thread: {0}")]
    Spawn(#[source] std::io::Error),
}

// A poisoned registry only means an undo panicked; the remaining entries are still valid and must
// still run, so poisoning is ignored rather than propagated.
fn registry() -> MutexGuard<'static, Vec<Entry>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The process-wide registry of undo actions.
#[derive(Debug)]
pub struct HostRestore;

impl HostRestore {
    /// Registers `undo` (described as `description`, e.g. "lru_gen enabled 0x0000 -> 0x0007") and
    /// returns the guard that runs it when dropped.
    pub fn register(
        description: impl Into<String>,
        undo: impl FnOnce() + Send + 'static,
    ) -> RestoreGuard {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let description = description.into();
        registry().push(Entry {
            id,
            description: description.clone(),
            undo: Box::new(undo),
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
        (e.undo)();
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

    /// Unregisters the undo without running it (the state was restored some other way).
    pub fn dismiss(self) {
        let id = self.id;
        std::mem::forget(self);
        registry().retain(|e| e.id != id);
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
            (e.undo)();
        }
    }
}

const CLEANUP_SIGNALS: [nix::sys::signal::Signal; 3] = [
    nix::sys::signal::Signal::SIGINT,
    nix::sys::signal::Signal::SIGTERM,
    nix::sys::signal::Signal::SIGHUP,
];

/// Blocks SIGINT/SIGTERM/SIGHUP in the calling thread and starts a thread that waits for them, runs
/// every pending undo in reverse order, reports them on stderr and exits with 128 + signo.
///
/// Call it first thing in `main`, before any other thread exists: threads inherit the signal mask,
/// so the cleanup thread is then the only one that ever receives these signals. Calling it again is
/// a no-op.
pub fn install_signal_cleanup() -> Result<(), HostGuardError> {
    let mut result = Ok(());
    SIGNAL_THREAD.call_once(|| {
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
