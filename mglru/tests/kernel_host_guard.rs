//! host_guard for real: a child process (this binary, re-executed) installs signal cleanup,
//! registers two undos writing to a marker file, and is sent SIGINT (and SIGTERM); the undos must
//! have run newest first and the child must exit with 128 + signo.

use agelab_mglru::host_guard::{install_signal_cleanup, HostRestore};
use agelab_mglru::testing::spawn_ready_child;
use std::io::Write;
use std::path::{Path, PathBuf};

const CHILD_ENV: &str = "AGELAB_HOST_GUARD_CHILD_MARKER";

fn child(marker: &Path) -> ! {
    install_signal_cleanup().expect("signal cleanup");
    // A worker started after install inherits the blocked mask, like a vCPU thread would.
    std::thread::spawn(|| loop {
        std::thread::park();
    });
    let append = |m: PathBuf, text: &'static str| {
        move || {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(m)
                .unwrap();
            writeln!(f, "{text}").unwrap();
        }
    };
    let _a = HostRestore::register("first", append(marker.to_path_buf(), "undo first"));
    let _b = HostRestore::register("second", append(marker.to_path_buf(), "undo second"));
    // Dropped guards run now and must not run again at the signal.
    drop(HostRestore::register(
        "dropped",
        append(marker.to_path_buf(), "undo dropped"),
    ));
    println!("ready");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn run_case(signal: nix::sys::signal::Signal) -> Result<(), String> {
    let marker = std::env::temp_dir().join(format!(
        "agelab-host-guard-{}-{}",
        std::process::id(),
        signal as i32
    ));
    let _ = std::fs::remove_file(&marker);
    let c = spawn_ready_child(CHILD_ENV, &marker)?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), signal)
        .map_err(|e| e.to_string())?;
    let out = c.wait_with_output().map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let got = std::fs::read_to_string(&marker).unwrap_or_default();
    let _ = std::fs::remove_file(&marker);
    let want = "undo dropped\nundo second\nundo first\n";
    if got != want {
        return Err(format!(
            "marker: expected {want:?}, saw {got:?}; stderr {stderr}"
        ));
    }
    if out.status.code() != Some(128 + signal as i32) {
        return Err(format!(
            "exit status {:?}, expected {}",
            out.status,
            128 + signal as i32
        ));
    }
    if !stderr.contains("restored second") || !stderr.contains("restored first") {
        return Err(format!("stderr does not report the restores: {stderr}"));
    }
    Ok(())
}

fn main() {
    if let Some(m) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&m));
    }
    // `cargo test -- --list` and friends: nothing to list beyond our two cases.
    if std::env::args().any(|a| a == "--list") {
        println!("sigint_runs_pending_undos: test\nsigterm_runs_pending_undos: test");
        return;
    }
    let mut failed = 0;
    let cases = [
        (
            "sigint_runs_pending_undos",
            nix::sys::signal::Signal::SIGINT,
        ),
        (
            "sigterm_runs_pending_undos",
            nix::sys::signal::Signal::SIGTERM,
        ),
    ];
    for (name, sig) in cases {
        match run_case(sig) {
            Ok(()) => println!("test {name} ... ok"),
            Err(e) => {
                println!("test {name} ... FAILED\n  {e}");
                failed += 1;
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out\n",
        if failed == 0 { "ok" } else { "FAILED" },
        cases.len() - failed
    );
    std::process::exit(i32::from(failed > 0));
}
