//! The watchdog: stops a running vCPU that made no ucall within the limit, and re-kicks one that
//! timed out until its thread ends.

use crate::vcpu::{self, VcpuShared};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Starts the watchdog thread over the vCPUs `shared` running on `threads`; it ends when `stop`
/// is set. `limit` holds the current limit in ms (0: disabled).
pub(super) fn spawn(
    shared: Vec<Arc<VcpuShared>>,
    threads: Vec<libc::pthread_t>,
    stop: Arc<AtomicBool>,
    limit: Arc<AtomicU64>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || watchdog(shared, threads, stop, limit))
}

fn watchdog(
    shared: Vec<Arc<VcpuShared>>,
    threads: Vec<libc::pthread_t>,
    stop: Arc<AtomicBool>,
    limit: Arc<AtomicU64>,
) {
    let sig = vcpu::kick_signal();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
        let ms = limit.load(Ordering::SeqCst);
        for (s, &t) in shared.iter().zip(&threads) {
            let running = !s.idle.load(Ordering::SeqCst) && !s.finished.load(Ordering::SeqCst);
            let expired = ms > 0 && s.since_progress() > Duration::from_millis(ms);
            if (running && expired && !s.stop.load(Ordering::SeqCst))
                || (s.timed_out.load(Ordering::SeqCst) && !s.finished.load(Ordering::SeqCst))
            {
                s.timed_out.store(true, Ordering::SeqCst);
                // SAFETY: vCPU threads are joined only after this thread stops, so `t` is valid.
                unsafe { libc::pthread_kill(t, sig) };
            }
        }
    }
}
