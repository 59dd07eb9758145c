//! Host side of the ucall: decoding the message a guest's doorbell store points at.

use agelab_guest::abi::{UcallCmd, UcallMsg, UCALL_ARGS, UCALL_BUF_LEN};
use std::mem::offset_of;
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

/// `UcallMsg` as plain bytes for vm-memory.
#[derive(Clone, Copy, Debug)]
#[repr(transparent)]
struct RawMsg(UcallMsg);

// SAFETY: UcallMsg is repr(C) of integers and a byte array: every bit pattern is valid and it has
// no padding (8 + 48 + 8 + 8 + 512 bytes).
unsafe impl ByteValued for RawMsg {}

/// A decoded ucall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ucall {
    /// SYNC(stage, args).
    Sync {
        /// The stage.
        stage: u64,
        /// Further arguments.
        args: [u64; UCALL_ARGS - 1],
    },
    /// The guest finished.
    Done,
    /// A guest assertion failed.
    Abort {
        /// Source file of the assertion.
        file: String,
        /// Line.
        line: u32,
        /// Formatted message.
        message: String,
    },
    /// Guest text output.
    Printf(String),
}

/// Errors decoding a ucall.
#[derive(Debug, thiserror::Error)]
pub enum UcallError {
    /// The message address is not in guest memory.
    #[error("ucall message at {0:#x} is outside guest memory")]
    BadAddress(u64),
    /// The command word is unknown.
    #[error("unknown ucall command {0:#x}")]
    BadCommand(u64),
}

/// Reads and decodes the ucall message at guest address `addr` (identity-mapped memory).
pub fn read_ucall(mem: &GuestMemoryMmap, addr: u64) -> Result<Ucall, UcallError> {
    let RawMsg(msg) = mem
        .read_obj::<RawMsg>(GuestAddress(addr))
        .map_err(|_| UcallError::BadAddress(addr))?;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let len = (msg.len as usize).min(UCALL_BUF_LEN);
    match UcallCmd::from_raw(msg.cmd) {
        Some(UcallCmd::Sync) => {
            let mut args = [0; UCALL_ARGS - 1];
            args.copy_from_slice(&msg.args[1..]);
            Ok(Ucall::Sync {
                stage: msg.args[0],
                args,
            })
        }
        Some(UcallCmd::Done) => Ok(Ucall::Done),
        Some(UcallCmd::Printf) => Ok(Ucall::Printf(text(&msg.buf[..len]))),
        Some(UcallCmd::Abort) => {
            let body = &msg.buf[..len];
            let (file, message) = match body.iter().position(|&b| b == 0) {
                Some(i) => (text(&body[..i]), text(&body[i + 1..])),
                None => (text(body), String::new()),
            };
            Ok(Ucall::Abort {
                file,
                line: msg.args[0] as u32,
                message,
            })
        }
        None => Err(UcallError::BadCommand(msg.cmd)),
    }
}

/// Writes the host's reply into the ucall message at `addr` (read by the guest after SYNC).
pub fn write_reply(mem: &GuestMemoryMmap, addr: u64, reply: u64) -> Result<(), UcallError> {
    mem.write_obj(
        reply,
        GuestAddress(addr + offset_of!(UcallMsg, reply) as u64),
    )
    .map_err(|_| UcallError::BadAddress(addr))
}
