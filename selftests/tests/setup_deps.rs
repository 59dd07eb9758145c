//! The fresh-machine set-up (`selftests/setup/deps.sh`) against simulated machine states.
//!
//! Each state is this host's real dpkg database with stanzas removed or added, handed to the
//! script with `--admindir`; `--simulate` resolves the plan with the real apt (`apt-get install -s`)
//! against the host's real Debian mirror. The states are the ones a machine of this project's kind
//! can be in: qemu-utils 10.0 from bookworm-backports present (the fresh image), no QEMU package at
//! all, everything present. The negative control shows that the first state really is the one in
//! which a plain `apt-get install qemu-system-x86` breaks.

use agelab_vmm::testing::skip;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/setup/deps.sh");
const QEMU_FAMILY: &[&str] = &[
    "qemu-utils",
    "qemu-system-common",
    "qemu-system-data",
    "qemu-system-x86",
    "qemu-system-arm",
    "qemu-system-gui",
    "qemu-block-extra",
];
/// Leaf packages of the list that nothing else on the machine depends on.
const LEAVES: &[&str] = &["busybox-static", "debootstrap", "dwarves"];

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    if !Path::new("/var/lib/dpkg/status").exists() {
        return Some("not a Debian machine (no /var/lib/dpkg/status)".into());
    }
    if Command::new("apt-get").arg("--version").output().is_err() {
        return Some("apt-get is not installed".into());
    }
    None
}

/// The stanzas of a dpkg status file.
fn stanzas(text: &str) -> Vec<String> {
    text.split("\n\n")
        .map(|s| s.trim_matches('\n').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn package_of(stanza: &str) -> Option<&str> {
    stanza
        .lines()
        .find_map(|l| l.strip_prefix("Package: "))
        .map(str::trim)
}

fn is_installed(stanza: &str) -> bool {
    stanza.lines().any(|l| l == "Status: install ok installed")
}

/// A dpkg admin dir holding the host's status with `drop` removed and `add` stanzas appended.
fn machine_state(name: &str, drop: &[&str], add: &[String]) -> PathBuf {
    let host = std::fs::read_to_string("/var/lib/dpkg/status").unwrap();
    let mut kept: Vec<String> = stanzas(&host)
        .into_iter()
        .filter(|s| package_of(s).is_none_or(|p| !drop.contains(&p)))
        .collect();
    kept.extend(add.iter().cloned());
    let dir = std::env::temp_dir().join(format!("agelab-setup-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("status"), kept.join("\n\n") + "\n").unwrap();
    dir
}

fn host_version(package: &str) -> Option<String> {
    let host = std::fs::read_to_string("/var/lib/dpkg/status").ok()?;
    stanzas(&host)
        .into_iter()
        .find(|s| package_of(s) == Some(package) && is_installed(s))
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Version: "))
                .map(str::to_string)
        })
}

fn deps(admindir: &Path, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(SCRIPT)
        .arg("--admindir")
        .arg(admindir)
        .args(args)
        .output()
        .expect("run deps.sh")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The version apt plans to install for `package`, from `Inst package (VERSION ...` lines.
fn planned_version(plan: &str, package: &str) -> Option<String> {
    let prefix = format!("Inst {package} (");
    plan.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
}

#[test]
fn qemu_utils_from_backports_present_takes_qemu_from_backports() {
    const TEST: &str = "setup_deps::backports_present";
    if let Some(reason) = skip_reason() {
        return skip(TEST, &reason);
    }
    let Some(utils) = host_version("qemu-utils").filter(|v| v.contains("~bpo")) else {
        return skip(
            TEST,
            "this machine has no qemu-utils from backports to model the fresh image on",
        );
    };
    // The fresh image: qemu-utils 10.0 from backports, no QEMU system emulator.
    let without_system: Vec<&str> = QEMU_FAMILY
        .iter()
        .copied()
        .filter(|p| *p != "qemu-utils")
        .collect();
    let state = machine_state("bpo", &without_system, &[]);

    // Negative control: the naive install is refused by apt in this state.
    let naive = Command::new("apt-get")
        .args([
            "-s",
            "install",
            "--no-install-recommends",
            "qemu-system-x86",
        ])
        .arg("-o")
        .arg(format!("Dir::State::status={}/status", state.display()))
        .output()
        .unwrap();
    let naive_plan = text(&naive);
    assert!(
        !naive.status.success() || naive_plan.contains("Remv qemu-utils"),
        "a plain `apt-get install qemu-system-x86` should break against qemu-utils {utils} \
         (or remove it), but apt planned it cleanly:\n{naive_plan}"
    );

    let out = deps(&state, &["--simulate"]);
    let plan = text(&out);
    assert!(out.status.success(), "deps.sh --simulate failed:\n{plan}");
    assert!(
        !plan.contains("Remv "),
        "the plan must remove nothing:\n{plan}"
    );
    for pkg in ["qemu-system-x86", "qemu-system-arm"] {
        assert_eq!(
            planned_version(&plan, pkg).as_deref(),
            Some(utils.as_str()),
            "{pkg} must be planned at the installed qemu-utils version:\n{plan}"
        );
    }
}

#[test]
fn no_qemu_present_takes_the_default_candidate() {
    const TEST: &str = "setup_deps::nothing_present";
    if let Some(reason) = skip_reason() {
        return skip(TEST, &reason);
    }
    let mut drop: Vec<&str> = QEMU_FAMILY.to_vec();
    drop.extend(LEAVES);
    let state = machine_state("none", &drop, &[]);
    let out = deps(&state, &["--simulate"]);
    let plan = text(&out);
    assert!(out.status.success(), "deps.sh --simulate failed:\n{plan}");
    assert!(
        !plan.contains("matching the installed"),
        "no QEMU is installed, nothing to match:\n{plan}"
    );
    for pkg in ["qemu-system-x86", "qemu-system-arm"]
        .iter()
        .chain(LEAVES.iter())
    {
        assert!(
            planned_version(&plan, pkg).is_some(),
            "{pkg} is missing and must be in the plan:\n{plan}"
        );
    }
    // --check names what is missing and exits 3.
    let check = deps(&state, &["--check"]);
    assert_eq!(check.status.code(), Some(3), "{}", text(&check));
    assert!(text(&check).contains("qemu-system-x86"), "{}", text(&check));
}

#[test]
fn everything_present_installs_nothing() {
    const TEST: &str = "setup_deps::everything_present";
    if let Some(reason) = skip_reason() {
        return skip(TEST, &reason);
    }
    // Every package of the list installed: the host's stanzas, plus a stanza for any the host lacks.
    let listed = Command::new("bash")
        .arg("-c")
        .arg(format!(
            ". <(sed -n '/^PACKAGES=/p' {SCRIPT}); echo $PACKAGES"
        ))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.contains("qemu-system-x86"), "package list: {listed}");
    let add: Vec<String> = listed
        .split_whitespace()
        .filter(|p| host_version(p).is_none())
        .map(|p| {
            format!(
                "Package: {p}\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0\n"
            )
        })
        .collect();
    let drop: Vec<&str> = listed
        .split_whitespace()
        .filter(|p| host_version(p).is_none())
        .collect();
    let state = machine_state("all", &drop, &add);
    for args in [&["--check"][..], &["--simulate"][..]] {
        let out = deps(&state, args);
        assert!(out.status.success(), "deps.sh {args:?}:\n{}", text(&out));
        assert!(
            text(&out).contains("nothing to install") && !text(&out).contains("Inst "),
            "deps.sh {args:?} must install nothing:\n{}",
            text(&out)
        );
    }
}

#[test]
fn not_root_names_the_packages_and_the_command() {
    const TEST: &str = "setup_deps::not_root";
    if let Some(reason) = skip_reason() {
        return skip(TEST, &reason);
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return skip(TEST, "setpriv (util-linux) is missing");
    }
    let state = machine_state("nonroot", &["busybox-static"], &[]);
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "bash",
            SCRIPT,
        ])
        .arg("--admindir")
        .arg(&state)
        .env("HOME", std::env::temp_dir())
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert_eq!(said.lines().count(), 1, "one message, not several:\n{said}");
    assert!(
        said.contains("not root")
            && said.contains("busybox-static")
            && said.contains("apt-get install"),
        "{said}"
    );
}

/// apt's own progress reaches the set-up's output (a CI log here: not a terminal): the index
/// fetch and, for a real download of a missing package (`--download-only`: .debs into a temporary
/// directory, nothing installed), apt's `Get:` line per package and its `Fetched ... (rate)`
/// total. Silencing apt (`-qq`, output only into install.log) fails this.
#[test]
fn apt_progress_is_shown_in_a_log() {
    const TEST: &str = "setup_deps::apt_progress";
    if let Some(reason) = skip_reason() {
        return skip(TEST, &reason);
    }
    let state = machine_state("progress", &["busybox-static"], &[]);
    let debs = state.join("debs");
    let out = deps(
        &state,
        &[
            "--packages",
            "busybox-static",
            "--download-only",
            debs.to_str().unwrap(),
        ],
    );
    let said = text(&out);
    if said.contains("apt-get update failed") {
        return skip(TEST, &format!("no Debian mirror reachable: {said}"));
    }
    assert!(out.status.success(), "deps.sh --download-only:\n{said}");
    let _ = writeln!(std::io::stderr().lock(), "{said}");
    let get = said
        .lines()
        .find(|l| l.starts_with("Get:") && l.contains(" busybox-static "));
    assert!(
        get.is_some_and(|l| l.ends_with(" kB]") || l.ends_with(" MB]")),
        "apt's Get: line with the package size is missing:\n{said}"
    );
    assert!(
        said.lines()
            .any(|l| l.starts_with("Fetched ") && l.ends_with("B/s)")),
        "apt's Fetched total with its rate is missing:\n{said}"
    );
    assert!(
        said.lines()
            .any(|l| l.starts_with("Hit:") || l.starts_with("Get:1 ")),
        "the index update is silent:\n{said}"
    );
    let fetched: Vec<_> = std::fs::read_dir(&debs)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("busybox-static_")
        })
        .collect();
    assert_eq!(fetched.len(), 1, "{said}");
    std::fs::remove_dir_all(&state).unwrap();
}
