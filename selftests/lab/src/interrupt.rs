//! Ctrl-C (SIGINT) and SIGTERM: the lab stops starting cells, kills the QEMU of each running
//! cell, writes what finished (results directory, table) and exits 130, instead of dying with
//! guests and run directories left behind.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the signal handler; read by every waiting loop.
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The exit status of a run stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: i32 = 130;

extern "C" fn on_signal(_: nix::libc::c_int) {
    // Only an atomic store: async-signal-safe.
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGINT and SIGTERM (idempotent).
pub fn install() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe, and it
        // replaces no handler another part of this process relies on (the lab installs none).
        if let Err(e) = unsafe { sigaction(sig, &action) } {
            eprintln!("agelab lab: cannot handle {sig}: {e}; Ctrl-C will not stop cleanly");
        }
    }
}

/// Whether SIGINT or SIGTERM arrived.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
