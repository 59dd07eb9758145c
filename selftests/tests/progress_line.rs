//! Progress of `agelab run` and `agelab reclaim` on a terminal: with stderr on a pseudo-terminal
//! (openpty, as a shell's terminal would be) one line is rewritten in place (`\r`, the epoch
//! against the run's, a key figure, erase-to-end-of-line); with `--quiet`, or with stderr a pipe,
//! nothing of it appears. (A terminal turns every `\n` into `\r\n`, so only the pipe case can
//! look for a bare `\r`.)

use agelab_vmm::testing::skip;
use std::io::Read;
use std::process::{Command, Stdio};

/// The in-place line's marks: carriage return, then the label and the epoch.
const RUN_LINE: &str = "\ragelab run: epoch ";
const RECLAIM_LINE: &str = "\ragelab reclaim: run 1/1 none on uniform:";
/// Erase to the end of the line (what makes it "in place" when it shrinks).
const ERASE: &str = "\x1b[K";

/// A short run on a small guest.
const RUN: &[&str] = &[
    "run",
    "--mem",
    "16M",
    "--duration",
    "1500ms",
    "--interval",
    "200ms",
    "--no-selfcheck",
    "--sources",
    "kvm-clear-log",
];

/// A short reclaim run that reclaims nothing (no swap needed).
const RECLAIM: &[&str] = &[
    "reclaim",
    "--policy",
    "none",
    "--workload",
    "uniform:op=read",
    "--mem",
    "16M",
    "--duration",
    "1500ms",
    "--warmup",
    "500ms",
    "--interval",
    "200ms",
];

fn kvm_usable(what: &str) -> bool {
    match agelab_vmm::vm::open_kvm() {
        Ok(_) => true,
        Err(e) => {
            skip(what, &e.to_string());
            false
        }
    }
}

/// Runs agelab with `args` and stderr on a pseudo-terminal of type `term`; returns what the
/// terminal got.
fn stderr_on_pty(args: &[&str], term: &str) -> String {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let mut child = Command::new(env!("CARGO_BIN_EXE_agelab"))
        .args(args)
        .env("TERM", term)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(pty.slave))
        .spawn()
        .expect("running agelab");
    // Only the child holds the terminal's slave side now: reading ends (EIO) when it exits.
    let mut master = std::fs::File::from(pty.master);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let status = child.wait().expect("wait");
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        status.success(),
        "agelab {}: {status}\n{text}",
        args.join(" ")
    );
    text
}

/// Runs agelab with `args` and stderr a pipe; returns stderr.
fn stderr_on_pipe(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_agelab"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running agelab");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "agelab {}: {text}", args.join(" "));
    text
}

fn with(args: &[&str], more: &str) -> Vec<String> {
    args.iter()
        .copied()
        .chain([more])
        .map(String::from)
        .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Checks the four cases for one command: a terminal shows the line (with its figure);
/// `--quiet` on a terminal, a `TERM=dumb` terminal (the lab's serial ports, kept as logs) and a
/// pipe show none.
fn shows_progress_only_on_a_terminal(what: &str, args: &[&str], line: &str, figure: &str) {
    if !kvm_usable(what) {
        return;
    }
    let tty = stderr_on_pty(args, "xterm");
    assert!(
        tty.contains(line) && tty.contains(ERASE),
        "{what}: on a terminal the progress line {line:?} appears, got {tty:?}"
    );
    assert!(
        tty.contains(figure),
        "{what}: the key figure {figure:?} in {tty:?}"
    );
    let quiet = stderr_on_pty(&strs(&with(args, "--quiet")), "xterm");
    assert!(
        !quiet.contains("epoch ") && !quiet.contains(ERASE),
        "{what}: --quiet on a terminal prints no progress, got {quiet:?}"
    );
    let dumb = stderr_on_pty(args, "dumb");
    assert!(
        !dumb.contains("epoch ") && !dumb.contains(ERASE),
        "{what}: a TERM=dumb terminal gets no in-place progress, got {dumb:?}"
    );
    let pipe = stderr_on_pipe(args);
    assert!(
        !pipe.contains('\r') && !pipe.contains("epoch ") && !pipe.contains(ERASE),
        "{what}: stderr not a terminal: no progress, got {pipe:?}"
    );
}

#[test]
fn run_shows_progress_only_on_a_terminal() {
    shows_progress_only_on_a_terminal("agelab run progress", RUN, RUN_LINE, "pages accessed");
}

#[test]
fn reclaim_shows_progress_only_on_a_terminal() {
    shows_progress_only_on_a_terminal(
        "agelab reclaim progress",
        RECLAIM,
        RECLAIM_LINE,
        "MiB, reclaimed ",
    );
}
