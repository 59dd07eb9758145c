//! Guest side of the ucall: a store of a message's address to the unbacked doorbell page.

use crate::abi::{UcallCmd, UcallMsg, UCALL_ARGS, UCALL_BUF_LEN, UCALL_MMIO_ADDR};
use core::fmt;
use core::sync::atomic::{compiler_fence, Ordering};

/// Rings the doorbell with `msg` and returns the host's reply (meaningful for SYNC).
#[inline(never)]
pub fn ucall_msg(msg: &mut UcallMsg) -> u64 {
    compiler_fence(Ordering::SeqCst);
    // SAFETY: UCALL_MMIO_ADDR is mapped by the guest page tables and backed by no memslot, so this
    // store never touches memory: it exits to the VMM, which reads `msg` through guest memory.
    unsafe { core::ptr::write_volatile(UCALL_MMIO_ADDR as *mut u64, msg as *mut UcallMsg as u64) };
    compiler_fence(Ordering::SeqCst);
    // SAFETY: `msg` is a live exclusive reference; the host may have written `reply` while the
    // vCPU was stopped, so read it volatile.
    unsafe { core::ptr::read_volatile(&msg.reply) }
}

/// Sends a command with integer arguments; returns the host's reply.
#[inline(never)]
pub fn ucall(cmd: UcallCmd, args: &[u64]) -> u64 {
    let mut msg = UcallMsg::new(cmd);
    let n = if args.len() < UCALL_ARGS {
        args.len()
    } else {
        UCALL_ARGS
    };
    let mut i = 0;
    while i < n {
        msg.args[i] = args[i];
        i += 1;
    }
    ucall_msg(&mut msg)
}

/// SYNC(stage, args): waits for the host; returns its reply.
pub fn sync(stage: u64, args: &[u64]) -> u64 {
    let mut all = [0u64; UCALL_ARGS];
    all[0] = stage;
    let mut i = 0;
    while i < args.len() && i + 1 < UCALL_ARGS {
        all[i + 1] = args[i];
        i += 1;
    }
    ucall(UcallCmd::Sync, &all)
}

/// DONE: the guest is finished. The vCPU thread ends on the host, so this never returns.
pub fn done() -> ! {
    ucall(UcallCmd::Done, &[]);
    park()
}

/// Spins forever: reached only if the host resumes a vCPU it should have stopped.
pub fn park() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// Writes text into a ucall buffer without calling `memcpy` (byte-wise volatile stores keep the
/// compiler from turning the loop into a library call).
struct BufWriter<'a> {
    msg: &'a mut UcallMsg,
}

impl BufWriter<'_> {
    fn push(&mut self, bytes: &[u8]) {
        let mut len = self.msg.len as usize;
        for &b in bytes {
            if len >= UCALL_BUF_LEN {
                break;
            }
            // SAFETY: `len < UCALL_BUF_LEN`, so the pointer stays inside `buf`.
            unsafe { core::ptr::write_volatile(self.msg.buf.as_mut_ptr().add(len), b) };
            len += 1;
        }
        self.msg.len = len as u64;
    }
}

impl fmt::Write for BufWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

/// PRINTF: formats in the guest and sends the text to the host.
#[inline(never)]
pub fn printf(args: fmt::Arguments<'_>) {
    let mut msg = UcallMsg::new(UcallCmd::Printf);
    let _ = fmt::write(&mut BufWriter { msg: &mut msg }, args);
    ucall_msg(&mut msg);
}

/// ABORT(file, line, message): reports a failed guest assertion; never returns.
#[inline(never)]
pub fn abort(file: &str, line: u32, args: fmt::Arguments<'_>) -> ! {
    let mut msg = UcallMsg::new(UcallCmd::Abort);
    msg.args[0] = u64::from(line);
    {
        let mut w = BufWriter { msg: &mut msg };
        w.push(file.as_bytes());
        w.push(&[0]);
        let _ = fmt::write(&mut w, args);
    }
    ucall_msg(&mut msg);
    park()
}

/// Formats and sends text to the host from guest code.
#[macro_export]
macro_rules! guest_printf {
    ($($arg:tt)*) => { $crate::ucall::printf(format_args!($($arg)*)) };
}

/// Asserts in guest code; on failure the host receives ABORT with file, line and message.
#[macro_export]
macro_rules! guest_assert {
    ($cond:expr $(,)?) => {
        if !$cond {
            $crate::ucall::abort(file!(), line!(), format_args!("assertion failed: {}", stringify!($cond)))
        }
    };
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            $crate::ucall::abort(file!(), line!(), format_args!($($arg)+))
        }
    };
}

/// Asserts equality in guest code, printing both values on failure.
#[macro_export]
macro_rules! guest_assert_eq {
    ($a:expr, $b:expr $(,)?) => {{
        let (a, b) = (&$a, &$b);
        if *a != *b {
            $crate::ucall::abort(
                file!(),
                line!(),
                format_args!(
                    "{} == {}: {:#x} != {:#x}",
                    stringify!($a),
                    stringify!($b),
                    *a,
                    *b
                ),
            )
        }
    }};
}
