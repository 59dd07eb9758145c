//! `source_matrix`: every access source measured against a guest that reads and writes known page
//! sets (the startup self-check, larger), one table row per source × workload kind with precision,
//! recall and harvest cost per GiB per pass. `make lab-sources` runs it on every lab kernel and
//! collects one table.
//!
//! `source_matrix --sigint-check` instead runs `agelab run`, interrupts it with SIGINT mid-run and
//! checks that it left nothing behind: no memcg, lru_gen `enabled`/`min_ttl_ms` as before, no
//! extra kdamond (KTAP; exit 0 pass, 1 fail, 4 skip).

use agelab_mglru::host_guard::{install_panic_hook, install_signal_cleanup};
use agelab_mglru::selfcheck::{self, Kind, SelfcheckOptions, SelfcheckReport};
use agelab_mglru::sources::SourceKind;
use agelab_util::units::parse_size;
use agelab_vmm::Backing;
use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;

/// The SIGINT cleanup check.
mod sigint {
    use agelab::scenarios::host_state::{
        agelab, agelab_memcg, check_line, read, HostState, ENABLED, MIN_TTL,
    };
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use agelab::ktap::{self, Ktap, OrSkip};

    fn host_state() -> HostState {
        HostState::read()
    }

    /// Runs the check; returns the exit code.
    pub fn check(perturb: bool) -> u8 {
        agelab_vmm::vm::open_kvm().or_skip();
        let mut t = Ktap::unplanned();
        let mut restore = Vec::new();
        if perturb {
            // Values agelab run would change (it sets every capability and min_ttl_ms 0).
            for (path, value) in [(ENABLED, "1"), (MIN_TTL, "1000")] {
                if let Some(old) = read(path) {
                    if std::fs::write(path, value).is_ok() {
                        restore.push((path, old));
                    }
                }
            }
        }
        let before = host_state();
        println!("# before: {before:?}");
        let mut child = match Command::new(agelab())
            .args([
                "run",
                "--mem",
                "256M",
                "--duration",
                "120s",
                "--interval",
                "300ms",
                "--sources",
                "auto",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => ktap::skip_all(&format!("cannot run agelab: {e}")),
        };
        let pid = child.id();
        let out = BufReader::new(child.stdout.take().expect("piped"));
        // Mid-run: after the self-check, once the main run has done a few aging passes.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut passes = 0;
            for line in out.lines().map_while(Result::ok) {
                if line.starts_with("pass ") {
                    passes += 1;
                    if passes == 3 {
                        let _ = tx.send(());
                    }
                }
            }
        });
        let got_passes = rx.recv_timeout(Duration::from_secs(600)).is_ok();
        check_line(
            &mut t,
            got_passes,
            "agelab run reached its third aging pass",
            "",
        );
        let during = host_state();
        let memcg = agelab_memcg("run", pid);
        let memcg_during = memcg.as_ref().is_some_and(|p| p.exists());
        println!("# during: {during:?}, memcg {memcg:?} exists: {memcg_during}");
        let t0 = Instant::now();
        // SAFETY: plain kill(2) of our own child by pid; it has not been reaped yet.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
        let status = child.wait();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        for l in err.lines().filter(|l| l.contains("restored")) {
            println!("# {l}");
        }
        let code = status.as_ref().ok().and_then(|s| s.code());
        check_line(
            &mut t,
            code == Some(130),
            "agelab run exited 128+SIGINT",
            &format!("in {:?}, status {status:?}", t0.elapsed()),
        );
        let after = host_state();
        println!("# after: {after:?}");
        let memcg_gone = memcg.as_ref().is_none_or(|p| !p.exists());
        check_line(&mut t, memcg_gone, "memcg removed", &format!("{memcg:?}"));
        check_line(
            &mut t,
            after.enabled == before.enabled && after.min_ttl == before.min_ttl,
            "lru_gen enabled and min_ttl_ms restored",
            &format!(
                "before {:?}/{:?}, after {:?}/{:?}",
                before.enabled, before.min_ttl, after.enabled, after.min_ttl
            ),
        );
        check_line(
            &mut t,
            after.kdamonds == before.kdamonds,
            "no kdamond left or changed",
            &format!("before {:?}, after {:?}", before.kdamonds, after.kdamonds),
        );
        // Whether the run changed anything at all (else the check proves little): reported.
        let changed = during != before || memcg_during;
        println!("# the run had changed host state mid-run: {changed} (memcg {memcg_during}, knobs/kdamonds {})", during != before);
        for (path, old) in restore {
            let _ = std::fs::write(path, old);
        }
        t.finish()
    }
}

/// Sources measured by default: every one that sees accesses.
const DEFAULT_SOURCES: &str = "kvm-clear-log,soft-dirty,uffd-wp,page_idle,damon-vaddr,damon-paddr";

#[derive(Debug, Parser)]
#[command(
    name = "source_matrix",
    about = "Access sources vs a guest's known read/write sets"
)]
struct Args {
    /// Guest test memory.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    mem: u64,
    /// Backing of guest memory: anon|anonymous (4 KiB pages), thp|anonymous_thp, memfd|shmem,
    /// hugetlb|anonymous_hugetlb|anonymous_hugetlb_2mb, file:PATH.
    #[arg(long, default_value = "anon")]
    backing: String,
    /// Comma-separated sources (catalog names, damon-paddr included).
    #[arg(long, default_value = DEFAULT_SOURCES)]
    sources: String,
    /// Seconds the guest keeps touching for sampling sources (DAMON).
    #[arg(long, default_value_t = 2.0)]
    window: f64,
    /// Kernel label for the table (default: uname -r).
    #[arg(long)]
    label: Option<String>,
    /// Also print the self-check's own table.
    #[arg(long)]
    verbose: bool,
    /// Run the SIGINT cleanup check instead.
    #[arg(long)]
    sigint_check: bool,
    /// With --sigint-check: set lru_gen enabled/min_ttl_ms to other values first, so that their
    /// restoration is visible (for disposable lab guests; restored afterwards).
    #[arg(long)]
    perturb: bool,
}

fn uname_r() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into())
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
}

/// Markdown rows: kernel | source | workload | precision | recall | ms/GiB per pass | note.
fn rows(label: &str, r: &SelfcheckReport) -> Vec<String> {
    let mut out = Vec::new();
    for s in &r.sources {
        if s.kinds.is_empty() {
            let mut why = s.reason.clone();
            if why.len() > 70 {
                why.truncate(67);
                why.push_str("...");
            }
            let what = if s.available {
                "not judged"
            } else {
                "unavailable"
            };
            out.push(format!(
                "| {label} | {} | - | - | - | - | {what}: {why} |",
                s.source
            ));
            continue;
        }
        for k in &s.kinds {
            if let Some(e) = &k.error {
                out.push(format!(
                    "| {label} | {} | {} | - | - | - | failed: {e} |",
                    s.source,
                    k.kind.as_str()
                ));
                continue;
            }
            let mut note = Vec::new();
            if k.granularity > 4096 {
                note.push(format!("regions ~{} KiB", k.granularity >> 10));
            }
            if k.untouched_reported > 0 {
                note.push(format!("{} untouched reported", k.untouched_reported));
            }
            if s.source == SourceKind::PageIdle.name() && k.recall.is_some_and(|v| v < 0.99) {
                note.push("lossy".into());
            }
            out.push(format!(
                "| {label} | {} | {} | {} | {} | {:.1} | {} |",
                s.source,
                k.kind.as_str(),
                pct(k.precision),
                pct(k.recall),
                k.ms_per_gib,
                note.join(", ")
            ));
        }
    }
    out
}

fn main() -> ExitCode {
    if let Err(e) = install_signal_cleanup() {
        eprintln!("source_matrix: {e}");
        return ExitCode::from(1);
    }
    install_panic_hook();
    let args: Args = agelab::args::parse_described("source_matrix");
    if args.sigint_check {
        return ExitCode::from(sigint::check(args.perturb));
    }
    let backing: Backing = match args.backing.parse() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("source_matrix: --backing: {e}");
            return ExitCode::from(2);
        }
    };
    let label = args.label.clone().unwrap_or_else(uname_r);
    let sources: Result<Vec<SourceKind>, _> = args
        .sources
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect();
    let sources = match sources {
        Ok(s) => s,
        Err(e) => {
            eprintln!("source_matrix: --sources: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = SelfcheckOptions {
        mem_bytes: args.mem,
        backing,
        sources,
        kinds: Kind::ALL.to_vec(),
        sampling_window: Duration::from_secs_f64(args.window),
        control: None,
    };
    let r = match selfcheck::run(&opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("source_matrix: {e}");
            return ExitCode::from(1);
        }
    };
    if args.verbose {
        println!("{}", r.table());
    }
    println!(
        "# source matrix on {label} ({}), {} MiB {}, DAMON window {:.1} s, self-check {:.1} s",
        uname_r(),
        args.mem >> 20,
        args.backing,
        args.window,
        r.total_ms / 1e3
    );
    println!("| kernel | source | workload | precision | recall | ms/GiB per pass | note |");
    println!("|---|---|---|---|---|---|---|");
    for row in rows(&label, &r) {
        println!("{row}");
    }
    ExitCode::SUCCESS
}
