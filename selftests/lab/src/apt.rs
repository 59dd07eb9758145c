//! Debian packages through apt, with a private apt state per suite under the lab cache.
//!
//! The host's apt configuration is read (to find its mirror) but never changed: each suite gets
//! its own sources list, lists and archive cache, and `apt-get download` fetches single `.deb`s
//! without installing anything. The mirror comes from the host's sources at run time, so no
//! mirror host name is written into the repository.

use super::cache::{create_dir, write_atomic, CacheError, CacheLock};
use super::deb822::{parse_paragraphs, Paragraph};
use agelab_util::progress::{bytes_line, minutes_seconds, Progress};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// How long downloaded package lists are trusted before `apt-get update` runs again.
const LISTS_MAX_AGE: Duration = Duration::from_secs(12 * 3600);

/// How often apt's downloads (packages, package lists) print a progress line when stderr is
/// not a terminal (CI logs).
const APT_LOG_EVERY: Duration = Duration::from_secs(10);

/// How often a running apt download is looked at.
const APT_POLL: Duration = Duration::from_millis(100);

/// Errors of the private apt state.
#[derive(Debug, thiserror::Error)]
pub enum AptError {
    /// The host's apt sources name no Debian mirror we can reuse.
    #[error("cannot derive a Debian mirror from the host's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d): {0}")]
    NoMirror(String),
    /// `apt-get update` failed for the private state of a suite.
    #[error("apt-get update for suite {suite} failed:\n{stderr}")]
    Update {
        /// The Debian suite.
        suite: String,
        /// apt's error output.
        stderr: String,
    },
    /// The package is not in the suite.
    #[error("package {package} not found in Debian suite {suite} ({arch})")]
    NotFound {
        /// The package name.
        package: String,
        /// The Debian suite.
        suite: String,
        /// The Debian architecture.
        arch: String,
    },
    /// `apt-get download` failed.
    #[error("downloading package {package} from Debian suite {suite} failed:\n{stderr}")]
    Download {
        /// The package name.
        package: String,
        /// The Debian suite.
        suite: String,
        /// apt's error output.
        stderr: String,
    },
    /// Running an apt or dpkg tool failed.
    #[error("running {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `dpkg-deb -x` failed.
    #[error("extracting {deb}: {stderr}")]
    Extract {
        /// The package file.
        deb: PathBuf,
        /// dpkg-deb's error output.
        stderr: String,
    },
    /// A downloaded package could not be moved into the cache.
    #[error("storing {path}: {source}")]
    Store {
        /// The cache file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Cache bookkeeping failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// One apt source of the host: mirror URIs, suites, components and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSource {
    /// Mirror URIs.
    pub uris: Vec<String>,
    /// Suites, e.g. `bookworm`, `bookworm-updates`.
    pub suites: Vec<String>,
    /// Components, e.g. `main`.
    pub components: Vec<String>,
    /// The `Signed-By` keyring path, if any.
    pub signed_by: Option<String>,
}

/// Parses deb822 `*.sources` text; only `Types: deb` entries that are not disabled count.
pub fn parse_deb822_sources(text: &str) -> Vec<HostSource> {
    parse_paragraphs(text)
        .iter()
        .filter(|p| p.words("Types").contains(&"deb"))
        .filter(|p| {
            !p.get("Enabled")
                .is_some_and(|v| v.eq_ignore_ascii_case("no"))
        })
        .map(|p: &Paragraph| HostSource {
            uris: p.words("URIs").iter().map(|s| s.to_string()).collect(),
            suites: p.words("Suites").iter().map(|s| s.to_string()).collect(),
            components: p
                .words("Components")
                .iter()
                .map(|s| s.to_string())
                .collect(),
            signed_by: p
                .get("Signed-By")
                .filter(|v| !v.contains('\n') && !v.is_empty())
                .map(str::to_string),
        })
        .filter(|s| !s.uris.is_empty() && !s.suites.is_empty())
        .collect()
}

/// Parses one-line-style `sources.list` text (`deb [opts] uri suite components...`).
pub fn parse_one_line_sources(text: &str) -> Vec<HostSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        else {
            continue;
        };
        let mut rest = rest.trim_start();
        let mut signed_by = None;
        if let Some(opts) = rest.strip_prefix('[') {
            let Some((opts, after)) = opts.split_once(']') else {
                continue;
            };
            signed_by = opts
                .split_whitespace()
                .find_map(|o| o.strip_prefix("signed-by="))
                .map(str::to_string);
            rest = after.trim_start();
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        if words.len() < 2 {
            continue;
        }
        out.push(HostSource {
            uris: vec![words[0].to_string()],
            suites: vec![words[1].to_string()],
            components: words[2..].iter().map(|s| s.to_string()).collect(),
            signed_by,
        });
    }
    out
}

/// All `deb` sources of the host under `root` (normally `/`).
pub fn host_sources(root: &Path) -> Vec<HostSource> {
    let etc = root.join("etc/apt");
    let mut out = Vec::new();
    if let Ok(text) = fs::read_to_string(etc.join("sources.list")) {
        out.extend(parse_one_line_sources(&text));
    }
    let mut parts: Vec<PathBuf> = fs::read_dir(etc.join("sources.list.d"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    parts.sort();
    for path in parts {
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("sources") => out.extend(parse_deb822_sources(&text)),
            Some("list") => out.extend(parse_one_line_sources(&text)),
            _ => {}
        }
    }
    out
}

/// The host's release codename from `/etc/os-release` text (`VERSION_CODENAME=bookworm`).
pub fn os_release_codename(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// One-line `sources.list` entries for `target` built from the host's sources: every host suite
/// named `codename` becomes `target`, `codename-X` becomes `target-X` (none for sid, which has
/// no updates or security suites), others are dropped.
pub fn sources_for_suite(host: &[HostSource], codename: &str, target: &str) -> Vec<String> {
    let unstable = matches!(target, "sid" | "unstable");
    let mut lines = Vec::new();
    for src in host {
        for suite in &src.suites {
            let mapped = if suite == codename {
                target.to_string()
            } else if let Some(suffix) = suite.strip_prefix(codename).filter(|s| s.starts_with('-'))
            {
                if unstable {
                    continue;
                }
                format!("{target}{suffix}")
            } else {
                continue;
            };
            let opts = src
                .signed_by
                .as_ref()
                .map(|k| format!("[signed-by={k}] "))
                .unwrap_or_default();
            let comps = if src.components.is_empty() {
                "main".to_string()
            } else {
                src.components.join(" ")
            };
            for uri in &src.uris {
                let line = format!("deb {opts}{uri} {mapped} {comps}");
                if !lines.contains(&line) {
                    lines.push(line);
                }
            }
        }
    }
    lines
}

/// A private apt state for one suite and architecture.
#[derive(Debug)]
pub struct PrivateApt {
    dir: PathBuf,
    suite: String,
    arch: String,
}

impl PrivateApt {
    /// Sets up (or reuses) the private state for `suite`/`arch` under `cache_root/apt`.
    pub fn open(cache_root: &Path, suite: &str, arch: &str) -> Result<Self, AptError> {
        let host = host_sources(Path::new("/"));
        let codename = fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| os_release_codename(&t))
            .or_else(|| {
                host.iter()
                    .flat_map(|s| s.suites.iter())
                    .find(|s| !s.contains('-'))
                    .cloned()
            })
            .ok_or_else(|| AptError::NoMirror("no release codename".into()))?;
        let lines = sources_for_suite(&host, &codename, suite);
        if lines.is_empty() {
            return Err(AptError::NoMirror(format!(
                "no deb source for the host's suite {codename}"
            )));
        }
        let dir = cache_root.join("apt").join(format!("{suite}-{arch}"));
        for sub in [
            "lists/partial",
            "archives/partial",
            "sources.list.d",
            "preferences.d",
            "debs",
        ] {
            create_dir(&dir.join(sub))?;
        }
        let mut sources = lines.join("\n");
        sources.push('\n');
        write_if_changed(&dir.join("sources.list"), sources.as_bytes())?;
        let d = dir.display();
        let mut conf = format!(
            "// agelab private apt state for {suite}/{arch}: generated, host apt untouched.\n\
             Dir::Etc::SourceList \"{d}/sources.list\";\n\
             Dir::Etc::SourceParts \"{d}/sources.list.d\";\n\
             Dir::Etc::Preferences \"{d}/preferences\";\n\
             Dir::Etc::PreferencesParts \"{d}/preferences.d\";\n\
             Dir::State \"{d}\";\n\
             Dir::State::Lists \"{d}/lists\";\n\
             Dir::State::status \"/dev/null\";\n\
             Dir::Cache \"{d}\";\n\
             Dir::Cache::archives \"{d}/archives\";\n\
             APT::Architecture \"{arch}\";\n\
             APT::Architectures {{ \"{arch}\"; }};\n\
             Acquire::Check-Valid-Until \"false\";\n\
             Acquire::Languages \"none\";\n\
             Acquire::IndexTargets::deb::DEP-11::DefaultEnabled \"false\";\n\
             Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled \"false\";\n\
             Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled \"false\";\n\
             Acquire::IndexTargets::deb::CNF::DefaultEnabled \"false\";\n\
             #clear APT::Update::Post-Invoke;\n\
             #clear APT::Update::Post-Invoke-Success;\n\
             #clear DPkg::Post-Invoke;\n"
        );
        if nix::unistd::geteuid().is_root() {
            // The private dirs belong to root; apt's _apt sandbox user could not write them.
            conf.push_str("APT::Sandbox::User \"root\";\n");
        }
        write_if_changed(&dir.join("apt.conf"), conf.as_bytes())?;
        Ok(Self {
            dir,
            suite: suite.to_string(),
            arch: arch.to_string(),
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("-c").arg(self.dir.join("apt.conf"));
        cmd.env("LC_ALL", "C");
        cmd
    }

    fn lock(&self) -> Result<CacheLock, AptError> {
        Ok(CacheLock::acquire(&self.dir.join("agelab.lock"))?)
    }

    /// When the package lists were last refreshed.
    pub fn lists_updated_at(&self) -> Option<SystemTime> {
        fs::metadata(self.dir.join("updated"))
            .and_then(|m| m.modified())
            .ok()
    }

    /// Runs `apt-get update` unless the lists are younger than 12 hours (or `force`).
    pub fn update(&self, force: bool) -> Result<(), AptError> {
        let _lock = self.lock()?;
        let stamp = self.dir.join("updated");
        let fresh = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < LISTS_MAX_AGE);
        if fresh && !force {
            return Ok(());
        }
        let child = self
            .command("apt-get")
            .args(["-q", "update"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error("apt-get"))?;
        let out = watch(
            child,
            &format!("updating the package lists of {}", self.suite),
            minutes_seconds,
            &mut Progress::stderr(APT_LOG_EVERY),
        )
        .map_err(spawn_error("apt-get"))?;
        let stderr = out.stderr;
        // apt-get update exits 0 even when a source failed; its "W:"/"E:" lines tell.
        if !out.status.success() || stderr.lines().any(|l| l.starts_with("E:")) {
            return Err(AptError::Update {
                suite: self.suite.clone(),
                stderr,
            });
        }
        write_atomic(&stamp, b"")?;
        Ok(())
    }

    /// The candidate version's `apt-cache show` paragraph of `package`.
    pub fn show(&self, package: &str) -> Result<Paragraph, AptError> {
        let out = self
            .command("apt-cache")
            .args(["show", "--no-all-versions", package])
            .output()
            .map_err(spawn_error("apt-cache"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_paragraphs(&text)
            .into_iter()
            .find(|p| p.get("Package") == Some(package))
            .filter(|_| out.status.success())
            .ok_or_else(|| AptError::NotFound {
                package: package.to_string(),
                suite: self.suite.clone(),
                arch: self.arch.clone(),
            })
    }

    /// Downloads the candidate of `package` (or reuses an earlier download); returns the file.
    /// Progress (bytes so far of the package's size, rate, elapsed) goes to stderr: in place on
    /// a terminal, a line every 10 s otherwise.
    pub fn download(&self, package: &str) -> Result<PathBuf, AptError> {
        let mut progress = Progress::stderr(APT_LOG_EVERY);
        let info = self.show(package)?;
        let debs = self.dir.join("debs");
        let file = debs.join(deb_file_name(package, &info, &self.arch));
        let _lock = self.lock()?;
        if file.exists() {
            return Ok(file);
        }
        // Fetched into partial/ and renamed when complete: an interrupted download is never
        // taken for a cached package.
        let partial = debs.join("partial");
        create_dir(&partial)?;
        let fetched = self.fetch_into(package, &info, &partial, &mut progress)?;
        fs::rename(&fetched, &file).map_err(|source| AptError::Store {
            path: file.clone(),
            source,
        })?;
        Ok(file)
    }

    /// Runs `apt-get download` for `package` (its `apt-cache show` paragraph `info`) in `dir`,
    /// reporting progress to `progress`; returns the downloaded file.
    pub fn fetch_into<W: Write>(
        &self,
        package: &str,
        info: &Paragraph,
        dir: &Path,
        progress: &mut Progress<W>,
    ) -> Result<PathBuf, AptError> {
        let file = dir.join(deb_file_name(package, info, &self.arch));
        let _ = fs::remove_file(&file);
        let total = info.get("Size").and_then(|s| s.parse().ok()).unwrap_or(0);
        let child = self
            .command("apt-get")
            .args(["-q", "download", package])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error("apt-get"))?;
        let watched = if crate::view::live_view_wanted() {
            watch_download_live(child, &file, total, package)
        } else {
            watch_download(child, &file, total, package, progress)
        }
        .map_err(spawn_error("apt-get"))?;
        if !watched.status.success() || !file.exists() {
            return Err(AptError::Download {
                package: package.to_string(),
                suite: self.suite.clone(),
                stderr: watched.stderr,
            });
        }
        Ok(file)
    }
}

/// The file name `apt-get download` gives `package` (`name_version_arch.deb`, `:` of an epoch
/// as `%3a`), from its `apt-cache show` paragraph.
fn deb_file_name(package: &str, info: &Paragraph, default_arch: &str) -> String {
    let version = info.get("Version").unwrap_or_default().replace(':', "%3a");
    let arch = info.get("Architecture").unwrap_or(default_arch);
    format!("{package}_{version}_{arch}.deb")
}

/// How a watched download ended.
#[derive(Debug)]
struct Watched {
    status: std::process::ExitStatus,
    stderr: String,
}

/// Waits for `child`, reporting `agelab lab: WHAT: <measure(elapsed)>` while it runs and the
/// same with `(done)` or `(failed)` at the end (work under 2 s that printed nothing stays
/// quiet). `child`'s stderr is collected for the error message.
fn watch<W: Write>(
    mut child: Child,
    what: &str,
    measure: impl Fn(Duration) -> String,
    progress: &mut Progress<W>,
) -> std::io::Result<Watched> {
    let stderr = collect_stderr(&mut child);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let elapsed = started.elapsed();
        progress.tick(elapsed, || {
            format!("agelab lab: {what}: {}", measure(elapsed))
        });
        std::thread::sleep(APT_POLL);
    };
    let elapsed = started.elapsed();
    let end = if status.success() { "done" } else { "failed" };
    progress.done(
        elapsed,
        Duration::from_secs(2),
        &format!("agelab lab: {what}: {} ({end})", measure(elapsed)),
    );
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    Ok(Watched { status, stderr })
}

/// Reads `child`'s piped stderr to its end on a thread of its own (so the child never blocks on
/// a full pipe); join the handle for the text.
fn collect_stderr(child: &mut Child) -> Option<std::thread::JoinHandle<String>> {
    child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    })
}

/// [`watch`] for a download of `package` into `file` (`total` bytes when known): bytes so far,
/// rate and elapsed time.
fn watch_download<W: Write>(
    child: Child,
    file: &Path,
    total: u64,
    package: &str,
    progress: &mut Progress<W>,
) -> std::io::Result<Watched> {
    let size = || fs::metadata(file).map_or(0, |m| m.len());
    watch(
        child,
        &format!("downloading {package}"),
        |elapsed| bytes_line(size(), total, elapsed),
        progress,
    )
}

/// [`watch_download`] on a terminal: an `indicatif` bar of bytes so far of `total` (a spinner
/// with the bytes when the size is unknown), rate and ETA, left on screen with `(done)` or
/// `(failed)`.
fn watch_download_live(
    mut child: Child,
    file: &Path,
    total: u64,
    package: &str,
) -> std::io::Result<Watched> {
    use indicatif::{ProgressBar, ProgressStyle};
    let stderr = collect_stderr(&mut child);
    let (bar, template) = if total > 0 {
        (
            ProgressBar::new(total),
            "agelab lab: {msg} {bar:30.cyan/blue} {bytes}/{total_bytes}, {bytes_per_sec}, {elapsed} (ETA {eta})",
        )
    } else {
        (
            ProgressBar::new_spinner(),
            "agelab lab: {msg} {spinner} {bytes}, {bytes_per_sec}, {elapsed}",
        )
    };
    bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
    bar.set_message(format!("downloading {package}"));
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        bar.set_position(fs::metadata(file).map_or(0, |m| m.len()));
        std::thread::sleep(APT_POLL);
    };
    bar.set_position(fs::metadata(file).map_or(0, |m| m.len()));
    let end = if status.success() { "done" } else { "failed" };
    bar.set_message(format!("downloading {package} ({end})"));
    bar.abandon();
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    Ok(Watched { status, stderr })
}

/// Extracts the contents of `deb` into `dest` with `dpkg-deb -x`.
pub fn extract_deb(deb: &Path, dest: &Path) -> Result<(), AptError> {
    create_dir(dest)?;
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(dest)
        .output()
        .map_err(spawn_error("dpkg-deb"))?;
    if !out.status.success() {
        return Err(AptError::Extract {
            deb: deb.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

/// Maps a failure to start (or wait for) `program` to [`AptError::Spawn`].
fn spawn_error(program: &'static str) -> impl FnOnce(std::io::Error) -> AptError {
    move |source| AptError::Spawn {
        program: program.into(),
        source,
    }
}

fn write_if_changed(path: &Path, data: &[u8]) -> Result<(), CacheError> {
    if fs::read(path).ok().as_deref() == Some(data) {
        return Ok(());
    }
    write_atomic(path, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "Types: deb\n# http://snapshot.invalid/archive/debian/20250520T000000Z\n\
        URIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
        Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n\
        Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
        Types: deb-src\nURIs: http://mirror.invalid/debian\nSuites: bookworm\nComponents: main\n";

    #[test]
    fn deb822_sources() {
        let s = parse_deb822_sources(DEB822);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].uris, ["http://mirror.invalid/debian"]);
        assert_eq!(s[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(
            s[1].signed_by.as_deref(),
            Some("/usr/share/keyrings/debian-archive-keyring.gpg")
        );
    }

    #[test]
    fn one_line_sources() {
        let s = parse_one_line_sources(
            "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m.invalid/debian bookworm main contrib\n\
             deb-src http://m.invalid/debian bookworm main\ndeb http://m.invalid/sec bookworm-security main # x\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].signed_by.as_deref(), Some("/k.gpg"));
        assert_eq!(s[0].components, ["main", "contrib"]);
        assert_eq!(s[1].suites, ["bookworm-security"]);
    }

    #[test]
    fn suite_substitution() {
        let host = parse_deb822_sources(DEB822);
        let k = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ";
        assert_eq!(
            sources_for_suite(&host, "bookworm", "trixie"),
            [
                format!("deb {k}http://mirror.invalid/debian trixie main"),
                format!("deb {k}http://mirror.invalid/debian trixie-updates main"),
                format!("deb {k}http://mirror.invalid/debian-security trixie-security main"),
            ]
        );
        assert_eq!(
            sources_for_suite(&host, "bookworm", "sid"),
            [format!("deb {k}http://mirror.invalid/debian sid main")]
        );
    }

    #[test]
    fn codename() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_CODENAME=bookworm\n";
        assert_eq!(os_release_codename(text).as_deref(), Some("bookworm"));
        assert_eq!(os_release_codename("ID=debian\n"), None);
    }

    /// A download the test controls: a shell appends 200 kB every 0.3 s, five times, to a file
    /// announced as 1 MB; the progress must follow it (removing the progress fails this).
    #[test]
    fn a_growing_download_prints_bytes_rate_and_elapsed() {
        let dir = std::env::temp_dir().join(format!("agelab-dl-progress-{}", std::process::id()));
        create_dir(&dir).unwrap();
        let file = dir.join("pkg.deb");
        let _ = fs::remove_file(&file);
        let child = Command::new("sh")
            .arg("-c")
            .arg("for i in 1 2 3 4 5; do head -c 200000 /dev/zero >> \"$0\"; sleep 0.3; done; echo fine >&2")
            .arg(&file)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut log = Progress::new(Vec::new(), false, Duration::from_millis(250));
        let watched = watch_download(child, &file, 1_000_000, "pkg", &mut log).unwrap();
        assert!(watched.status.success());
        assert_eq!(watched.stderr, "fine\n");
        let text = String::from_utf8(log.into_inner()).unwrap();
        writeln!(std::io::stderr().lock(), "{text}").unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.len() >= 4,
            "a line per 0.25 s of a 1.5 s download: {text}"
        );
        for l in &lines[..lines.len() - 1] {
            assert!(l.starts_with("agelab lab: downloading pkg: "), "{l}");
            assert!(l.contains("/1.0 MB (") && l.contains(" MB/s, 0m0"), "{l}");
        }
        let last = lines.last().unwrap();
        assert!(
            last.starts_with("agelab lab: downloading pkg: 1.0/1.0 MB (100%), ")
                && last.ends_with(" (done)"),
            "{last}"
        );
        let sizes: Vec<&str> = lines.iter().map(|l| l.split('/').next().unwrap()).collect();
        assert!(
            sizes.windows(2).any(|w| w[0] != w[1]),
            "the byte count never moved: {text}"
        );
        let mut tty = Progress::new(Vec::new(), true, Duration::ZERO);
        let child = Command::new("sh")
            .arg("-c")
            .arg("sleep 0.3")
            .spawn()
            .unwrap();
        watch_download(child, &file, 1_000_000, "pkg", &mut tty).unwrap();
        let text = String::from_utf8(tty.into_inner()).unwrap();
        assert!(
            text.starts_with("\ragelab lab: downloading pkg: 1.0/1.0 MB (100%)"),
            "{text:?}"
        );
        assert_eq!(
            text.matches('\n').count(),
            1,
            "one line, rewritten in place: {text:?}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A real `apt-get download` of busybox-static (~1 MB) from the host's mirror into a fresh
    /// directory, progress on every poll: at least one progress line and the final one.
    #[test]
    fn a_real_download_reports_progress() {
        let skip = |why: &str| writeln!(std::io::stderr().lock(), "SKIP: {why}").unwrap();
        if Command::new("apt-get").arg("--version").output().is_err() {
            return skip("apt-get not installed");
        }
        let cache = super::super::cache::cache_root().unwrap();
        let apt = match PrivateApt::open(&cache, "sid", "amd64") {
            Ok(a) => a,
            Err(e) => return skip(&e.to_string()),
        };
        if let Err(e) = apt.update(false) {
            return skip(&format!("no Debian mirror reachable: {e}"));
        }
        let info = apt.show("busybox-static").unwrap();
        let dir = std::env::temp_dir().join(format!("agelab-dl-real-{}", std::process::id()));
        create_dir(&dir).unwrap();
        let mut log = Progress::new(Vec::new(), false, Duration::ZERO);
        let file = apt
            .fetch_into("busybox-static", &info, &dir, &mut log)
            .unwrap();
        let size = fs::metadata(&file).unwrap().len();
        assert_eq!(Some(size.to_string().as_str()), info.get("Size"));
        let text = String::from_utf8(log.into_inner()).unwrap();
        writeln!(std::io::stderr().lock(), "{text}").unwrap();
        assert!(
            text.contains("agelab lab: downloading busybox-static: "),
            "{text}"
        );
        assert!(
            text.contains("(100%)") && text.ends_with(" (done)\n"),
            "{text}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_package_error_names_package_and_suite() {
        let e = AptError::Download {
            package: "linux-binary-9.9".into(),
            suite: "sid".into(),
            stderr: "E: connection refused".into(),
        };
        assert!(e
            .to_string()
            .contains("linux-binary-9.9 from Debian suite sid"));
        if Command::new("apt-get").arg("--version").output().is_err() {
            println!("SKIP: apt-get not installed");
            return;
        }
        let cache = super::super::cache::cache_root().unwrap();
        let apt = match PrivateApt::open(&cache, "sid", "amd64") {
            Ok(a) => a,
            Err(e) => return println!("SKIP: {e}"),
        };
        if let Err(e) = apt.update(false) {
            return println!("SKIP: no Debian mirror reachable: {e}");
        }
        let err = apt
            .download("agelab-no-such-package")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("agelab-no-such-package") && err.contains("sid"),
            "{err}"
        );
    }
}
