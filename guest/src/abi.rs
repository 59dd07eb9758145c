//! The guest/host ABI: fixed guest addresses and the shared structures both sides read.

/// Guest-physical (and, identity-mapped, guest-virtual) address of the ucall doorbell.
///
/// No memslot backs it, so a store there exits to the VMM as MMIO — at CPL3 on x86_64 (port I/O
/// would need a TSS I/O bitmap) and at EL0 on aarch64 alike. The stored value is the guest address
/// of a [`UcallMsg`].
pub const UCALL_MMIO_ADDR: u64 = 0x3000_0000;

/// Guest-physical base of the system memslot (page tables, GDT, stacks, code copies, parameters).
pub const SYSTEM_BASE: u64 = 0x4000_0000;

/// Guest-physical (identity-mapped) base of the test memory that workloads touch and sources track.
pub const TEST_BASE: u64 = 0x1_0000_0000;

/// Bytes of message text a ucall carries.
pub const UCALL_BUF_LEN: usize = 512;

/// Number of integer arguments a ucall carries.
pub const UCALL_ARGS: usize = 6;

/// A ucall command.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UcallCmd {
    /// Synchronise with the host at a stage; the vCPU waits until the host resumes it.
    Sync = 1,
    /// The guest finished.
    Done = 2,
    /// A guest assertion failed: `args[0]` is the line, `buf` holds `file\0message`.
    Abort = 3,
    /// Text for the host's output, in `buf`.
    Printf = 4,
}

impl UcallCmd {
    /// Decodes a raw command word.
    pub fn from_raw(raw: u64) -> Option<Self> {
        match raw {
            1 => Some(UcallCmd::Sync),
            2 => Some(UcallCmd::Done),
            3 => Some(UcallCmd::Abort),
            4 => Some(UcallCmd::Printf),
            _ => None,
        }
    }
}

/// The message a ucall points the host at. It lives on the guest's stack.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UcallMsg {
    /// A [`UcallCmd`] value.
    pub cmd: u64,
    /// Integer arguments (SYNC: `args[0]` is the stage).
    pub args: [u64; UCALL_ARGS],
    /// Host's reply for SYNC (the host writes it before resuming the vCPU).
    pub reply: u64,
    /// Valid bytes in `buf`.
    pub len: u64,
    /// Message text.
    pub buf: [u8; UCALL_BUF_LEN],
}

impl UcallMsg {
    /// An empty message for `cmd`.
    pub const fn new(cmd: UcallCmd) -> Self {
        UcallMsg {
            cmd: cmd as u64,
            args: [0; UCALL_ARGS],
            reply: 0,
            len: 0,
            buf: [0; UCALL_BUF_LEN],
        }
    }
}
