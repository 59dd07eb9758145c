//! Stage synchronisation with the vCPUs, in the spirit of the kernel selftests' memstress
//! iteration sync: resume every vCPU with one reply, then wait until each reports `SYNC(stage)`.
//!
//! Every selftest, benchmark and self-check drives its guests through these calls instead of its
//! own event loop. Guest `printf` text met while waiting is printed as a KTAP diagnostic
//! (`# guest N: text`); any other event (a different stage, DONE, an assertion, a vCPU error)
//! ends the wait with [`VmError::UnexpectedEvent`] or the vCPU's own [`VcpuError`](crate::VcpuError).

use super::{Vm, VmError};
use crate::vcpu::VcpuEvent;
use agelab_guest::abi::UCALL_ARGS;
use std::io::Write;
use std::time::Duration;

/// The arguments a vCPU passed with its SYNC (after the stage).
pub type SyncArgs = [u64; UCALL_ARGS - 1];

impl Vm {
    /// Resumes every vCPU (each waiting in SYNC) with `reply` as the ucall's return value.
    pub fn resume_all(&self, reply: u64) -> Result<(), VmError> {
        (0..self.vcpus()).try_for_each(|v| self.resume(v, reply))
    }

    /// Waits until every vCPU has reported `SYNC(stage)` (each at most `timeout` after the
    /// previous event) and returns each vCPU's arguments, indexed by vCPU.
    pub fn wait_sync_all(&self, stage: u64, timeout: Duration) -> Result<Vec<SyncArgs>, VmError> {
        let mut got: Vec<Option<SyncArgs>> = vec![None; self.vcpus()];
        while got.iter().any(Option::is_none) {
            let (vcpu, args) = self.next_sync(stage, timeout)?;
            got[vcpu] = Some(args);
        }
        Ok(got.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// One iteration: resumes every vCPU with `reply` and waits until each reports
    /// `SYNC(stage)` again; returns each vCPU's arguments.
    pub fn sync_all(
        &self,
        stage: u64,
        reply: u64,
        timeout: Duration,
    ) -> Result<Vec<SyncArgs>, VmError> {
        self.resume_all(reply)?;
        self.wait_sync_all(stage, timeout)
    }

    /// Waits for the next `SYNC(stage)` of any vCPU; returns which vCPU and its arguments.
    pub fn next_sync(&self, stage: u64, timeout: Duration) -> Result<(usize, SyncArgs), VmError> {
        loop {
            match self.next_event(timeout)? {
                VcpuEvent::Sync {
                    vcpu,
                    stage: s,
                    args,
                } if s == stage => return Ok((vcpu, args)),
                VcpuEvent::Printf { vcpu, text } => print_guest_text(vcpu, &text),
                VcpuEvent::Failed(e) => return Err(VmError::Vcpu(e)),
                other => {
                    return Err(VmError::UnexpectedEvent {
                        stage,
                        event: describe(&other),
                    })
                }
            }
        }
    }

    /// Resumes every vCPU with `reply` and waits until each has ended with DONE (used to let
    /// guests leave their command loop); guest text is printed as in [`Vm::next_sync`].
    pub fn finish_all(&self, reply: u64, timeout: Duration) -> Result<(), VmError> {
        self.resume_all(reply)?;
        let mut done = vec![false; self.vcpus()];
        while done.iter().any(|d| !d) {
            match self.next_event(timeout)? {
                VcpuEvent::Done { vcpu } => done[vcpu] = true,
                VcpuEvent::Printf { vcpu, text } => print_guest_text(vcpu, &text),
                VcpuEvent::Failed(e) => return Err(VmError::Vcpu(e)),
                other => {
                    return Err(VmError::UnexpectedEvent {
                        stage: 0,
                        event: describe(&other),
                    })
                }
            }
        }
        Ok(())
    }
}

fn print_guest_text(vcpu: usize, text: &str) {
    let mut out = std::io::stdout().lock();
    for line in text.lines() {
        let _ = writeln!(out, "# guest {vcpu}: {line}");
    }
    let _ = out.flush();
}

/// One line for an event the host did not wait for.
fn describe(event: &VcpuEvent) -> String {
    match event {
        VcpuEvent::Sync { vcpu, stage, args } => {
            format!("vCPU {vcpu}: SYNC({stage:#x}) with {args:?}")
        }
        VcpuEvent::Printf { vcpu, text } => format!("vCPU {vcpu}: printf {text:?}"),
        VcpuEvent::Done { vcpu } => format!("vCPU {vcpu}: finished (DONE)"),
        VcpuEvent::Abort {
            vcpu,
            file,
            line,
            message,
        } => format!("vCPU {vcpu}: guest assertion failed at {file}:{line}: {message}"),
        VcpuEvent::Failed(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unexpected_events_name_the_vcpu_and_what_happened() {
        assert_eq!(
            describe(&VcpuEvent::Done { vcpu: 3 }),
            "vCPU 3: finished (DONE)"
        );
        let abort = VcpuEvent::Abort {
            vcpu: 1,
            file: "g.rs".into(),
            line: 7,
            message: "x != y".into(),
        };
        assert_eq!(
            describe(&abort),
            "vCPU 1: guest assertion failed at g.rs:7: x != y"
        );
        let e = VmError::UnexpectedEvent {
            stage: 2,
            event: describe(&VcpuEvent::Done { vcpu: 0 }),
        };
        assert_eq!(
            e.to_string(),
            "waiting for SYNC(0x2): vCPU 0: finished (DONE)"
        );
    }
}
