//! Workload specifications: `PATTERN[:key=value,...]`, e.g. `hotcold:hot=10%,p=90%,op=read`.
//!
//! Shorthands `PATTERN-OP` (`seq-write`, `uniform-read`, `hotcold-mix`) set `op`. Common keys:
//! `op=read|write|mix`, `write=PCT` (share of writes for `mix`, default 50%), `gran=4k|2m`,
//! `share=private|shared`, `seed=N`, `ops=N` (accesses per vCPU per epoch instead of time).

use agelab_guest::pattern::{PatternKind, PatternParams, ALWAYS, PAGES_PER_2M};
use std::fmt;
use std::str::FromStr;

/// Errors in a workload specification. Each names the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkloadSpecError {
    /// The pattern name is unknown.
    #[error("unknown workload pattern '{name}' (known: {known})")]
    UnknownPattern {
        /// The name given.
        name: String,
        /// Known names.
        known: String,
    },
    /// A key is not a parameter of the pattern.
    #[error("workload '{pattern}': unknown parameter '{key}' (valid: {valid})")]
    UnknownParam {
        /// The pattern.
        pattern: String,
        /// The key.
        key: String,
        /// Valid keys.
        valid: String,
    },
    /// A value does not parse or is out of range.
    #[error("workload parameter '{key}={value}': {why}")]
    BadValue {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// A `key=value` item lacks `=`.
    #[error("workload parameter '{0}' is not of the form key=value")]
    NotKeyValue(String),
    /// One key given twice (or `op` given by a `-read`/`-write`/`-mix` shorthand and as a key).
    #[error("workload parameter '{key}' given twice ({first} and {second})")]
    DuplicateParam {
        /// The key.
        key: String,
        /// The first setting.
        first: String,
        /// The second setting.
        second: String,
    },
}

/// What the accesses do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Loads only.
    Read,
    /// Stores only.
    Write,
    /// Both, with the given share of writes (percent).
    Mix(u8),
}

impl Op {
    /// Name for output.
    pub fn name(&self) -> String {
        match self {
            Op::Read => "read".into(),
            Op::Write => "write".into(),
            Op::Mix(w) => format!("mix({w}% writes)"),
        }
    }
}

/// Whether vCPUs share one region or each get a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// Each vCPU touches its own slice of test memory.
    Private,
    /// Every vCPU touches all of test memory.
    Shared,
}

/// When a phase-shift workload moves its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhaseEvery {
    /// After this many accesses.
    Accesses(u64),
    /// After this many milliseconds of run time.
    Millis(u64),
}

/// The pattern and its parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pattern {
    /// Sequential sweep.
    Sequential,
    /// Uniform random.
    Uniform,
    /// Zipfian with skew `s`.
    Zipfian {
        /// Skew exponent.
        s: f64,
    },
    /// `hot_pct`% of pages receive `p_pct`% of accesses.
    HotCold {
        /// Percent of pages that are hot.
        hot_pct: f64,
        /// Percent of accesses that go to hot pages.
        p_pct: f64,
    },
    /// A window of `ws_pct`% of pages, moved by `shift_pct`% every `every`.
    PhaseShift {
        /// Window size, percent of pages.
        ws_pct: f64,
        /// Shift per phase, percent of pages.
        shift_pct: f64,
        /// Phase length.
        every: PhaseEvery,
    },
    /// Every `stride`-th unit.
    Strided {
        /// Stride in units.
        stride: u64,
    },
}

/// A full workload specification.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadSpec {
    /// The pattern.
    pub pattern: Pattern,
    /// Loads, stores or both.
    pub op: Op,
    /// 2 MiB units instead of 4 KiB pages.
    pub huge_units: bool,
    /// Private partitions or one shared region.
    pub sharing: Sharing,
    /// Seed of the generators.
    pub seed: u64,
    /// Accesses per vCPU per epoch (None: epochs end by time).
    pub ops: Option<u64>,
}

/// One documented parameter.
#[derive(Clone, Copy, Debug)]
pub struct ParamDoc {
    /// Key.
    pub key: &'static str,
    /// Default.
    pub default: &'static str,
    /// Meaning.
    pub help: &'static str,
}

/// One documented pattern.
#[derive(Clone, Copy, Debug)]
pub struct PatternDoc {
    /// Name (and aliases).
    pub name: &'static str,
    /// Aliases accepted.
    pub aliases: &'static [&'static str],
    /// What it does.
    pub help: &'static str,
    /// Its own parameters.
    pub params: &'static [ParamDoc],
}

/// Parameters every pattern takes.
pub const COMMON_PARAMS: &[ParamDoc] = &[
    ParamDoc {
        key: "op",
        default: "write",
        help: "read, write or mix",
    },
    ParamDoc {
        key: "write",
        default: "50%",
        help: "share of writes when op=mix",
    },
    ParamDoc {
        key: "gran",
        default: "4k",
        help: "access unit: 4k pages or 2m (huge-page sized units)",
    },
    ParamDoc {
        key: "share",
        default: "private",
        help: "private: one partition per vCPU; shared: all vCPUs over all memory",
    },
    ParamDoc {
        key: "seed",
        default: "1",
        help: "generator seed (the run is replayable from it)",
    },
    ParamDoc {
        key: "ops",
        default: "time",
        help: "accesses per vCPU per epoch; default: epochs end by time",
    },
];

/// Every pattern with its parameters and defaults.
pub const PATTERNS: &[PatternDoc] = &[
    PatternDoc {
        name: "seq",
        aliases: &["sequential"],
        help: "sweep units in order, wrapping around",
        params: &[],
    },
    PatternDoc {
        name: "uniform",
        aliases: &["random"],
        help: "uniformly random units",
        params: &[],
    },
    PatternDoc {
        name: "zipf",
        aliases: &["zipfian"],
        help: "zipf-distributed units (rank = unit number), exact via an alias table",
        params: &[ParamDoc {
            key: "s",
            default: "0.99",
            help: "skew exponent (0 < s <= 5)",
        }],
    },
    PatternDoc {
        name: "hotcold",
        aliases: &[],
        help: "the first hot% of units receive p% of accesses, the rest uniformly the remainder",
        params: &[
            ParamDoc {
                key: "hot",
                default: "10%",
                help: "share of units that are hot",
            },
            ParamDoc {
                key: "p",
                default: "90%",
                help: "share of accesses that go to hot units",
            },
        ],
    },
    PatternDoc {
        name: "phase",
        aliases: &["phase-shift", "phaseshift"],
        help: "uniform accesses in a window that moves by `shift` every `every`",
        params: &[
            ParamDoc {
                key: "ws",
                default: "10%",
                help: "window (working set) size",
            },
            ParamDoc {
                key: "shift",
                default: "ws",
                help: "distance the window moves per phase",
            },
            ParamDoc {
                key: "every",
                default: "1000000",
                help: "phase length: N accesses, or a time such as 500ms",
            },
        ],
    },
    PatternDoc {
        name: "strided",
        aliases: &["stride"],
        help: "every stride-th unit, wrapping around",
        params: &[ParamDoc {
            key: "stride",
            default: "16",
            help: "stride in units (>= 1)",
        }],
    },
];

fn bad(key: &str, value: &str, why: impl Into<String>) -> WorkloadSpecError {
    WorkloadSpecError::BadValue {
        key: key.into(),
        value: value.into(),
        why: why.into(),
    }
}

/// Parses `10%`, `10` or `0.1` (a fraction when ≤ 1 without `%`) into a percentage in 0..=100.
fn percent(key: &str, v: &str) -> Result<f64, WorkloadSpecError> {
    let (num, is_pct) = match v.strip_suffix('%') {
        Some(n) => (n, true),
        None => (v, false),
    };
    let x: f64 = num
        .trim()
        .parse()
        .map_err(|_| bad(key, v, "not a number (use e.g. 10%)"))?;
    let pct = if is_pct || x > 1.0 { x } else { x * 100.0 };
    if !(0.0..=100.0).contains(&pct) || !pct.is_finite() {
        return Err(bad(key, v, "must be between 0% and 100%"));
    }
    Ok(pct)
}

fn integer(key: &str, v: &str) -> Result<u64, WorkloadSpecError> {
    let t = v.replace('_', "");
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1_000),
        Some('m' | 'M') => (&t[..t.len() - 1], 1_000_000),
        Some('g' | 'G') => (&t[..t.len() - 1], 1_000_000_000),
        _ => (t.as_str(), 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| bad(key, v, "not a non-negative integer"))
}

impl FromStr for WorkloadSpec {
    type Err = WorkloadSpecError;

    fn from_str(s: &str) -> Result<Self, WorkloadSpecError> {
        let s = s.trim();
        let (head, params) = s.split_once(':').unwrap_or((s, ""));
        let mut name = head.to_ascii_lowercase();
        let mut op_shorthand = None;
        // Where each key was set, to refuse a key given twice.
        let mut given: Vec<(String, String)> = Vec::new();
        for (suffix, op) in [
            ("-read", Op::Read),
            ("-write", Op::Write),
            ("-mix", Op::Mix(50)),
        ] {
            if let Some(base) = name.strip_suffix(suffix) {
                op_shorthand = Some(op);
                name = base.to_string();
                given.push(("op".into(), format!("the {suffix} shorthand")));
            }
        }
        let doc = PATTERNS
            .iter()
            .find(|d| d.name == name || d.aliases.contains(&name.as_str()))
            .ok_or_else(|| WorkloadSpecError::UnknownPattern {
                name: head.to_string(),
                known: PATTERNS
                    .iter()
                    .map(|d| d.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let mut spec = WorkloadSpec {
            pattern: match doc.name {
                "seq" => Pattern::Sequential,
                "uniform" => Pattern::Uniform,
                "zipf" => Pattern::Zipfian { s: 0.99 },
                "hotcold" => Pattern::HotCold {
                    hot_pct: 10.0,
                    p_pct: 90.0,
                },
                "phase" => Pattern::PhaseShift {
                    ws_pct: 10.0,
                    shift_pct: f64::NAN,
                    every: PhaseEvery::Accesses(1_000_000),
                },
                _ => Pattern::Strided { stride: 16 },
            },
            op: op_shorthand.unwrap_or(Op::Write),
            huge_units: false,
            sharing: Sharing::Private,
            seed: 1,
            ops: None,
        };
        let mut write_pct = None;
        for item in params.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| WorkloadSpecError::NotKeyValue(item.to_string()))?;
            let (k, v) = (k.trim(), v.trim());
            if let Some((_, first)) = given.iter().find(|(key, _)| key == k) {
                return Err(WorkloadSpecError::DuplicateParam {
                    key: k.into(),
                    first: first.clone(),
                    second: format!("{k}={v}"),
                });
            }
            given.push((k.into(), format!("{k}={v}")));
            match (k, &mut spec.pattern) {
                ("op", _) => {
                    spec.op = match v {
                        "read" | "r" => Op::Read,
                        "write" | "w" => Op::Write,
                        "mix" | "rw" => Op::Mix(50),
                        _ => return Err(bad(k, v, "expected read, write or mix")),
                    }
                }
                ("write", _) => write_pct = Some(percent(k, v)?),
                ("gran", _) => {
                    spec.huge_units = match v.to_ascii_lowercase().as_str() {
                        "4k" | "4kib" => false,
                        "2m" | "2mib" => true,
                        _ => return Err(bad(k, v, "expected 4k or 2m")),
                    }
                }
                ("share", _) => {
                    spec.sharing = match v {
                        "private" => Sharing::Private,
                        "shared" => Sharing::Shared,
                        _ => return Err(bad(k, v, "expected private or shared")),
                    }
                }
                ("seed", _) => spec.seed = integer(k, v)?,
                ("ops", _) => {
                    let n = integer(k, v)?;
                    if n == 0 {
                        return Err(bad(k, v, "must be at least 1"));
                    }
                    spec.ops = Some(n);
                }
                ("s", Pattern::Zipfian { s }) => {
                    let x: f64 = v.parse().map_err(|_| bad(k, v, "not a number"))?;
                    if !(x > 0.0 && x <= 5.0) {
                        return Err(bad(k, v, "skew must be in (0, 5]"));
                    }
                    *s = x;
                }
                ("hot", Pattern::HotCold { hot_pct, .. }) => {
                    *hot_pct = percent(k, v)?;
                    if *hot_pct <= 0.0 || *hot_pct >= 100.0 {
                        return Err(bad(k, v, "hot share must be strictly between 0% and 100%"));
                    }
                }
                ("p", Pattern::HotCold { p_pct, .. }) => *p_pct = percent(k, v)?,
                ("ws", Pattern::PhaseShift { ws_pct, .. }) => {
                    *ws_pct = percent(k, v)?;
                    if *ws_pct <= 0.0 {
                        return Err(bad(k, v, "window must be larger than 0%"));
                    }
                }
                ("shift", Pattern::PhaseShift { shift_pct, .. }) => *shift_pct = percent(k, v)?,
                ("every", Pattern::PhaseShift { every, .. }) => {
                    *every = if let Some(ms) = v.strip_suffix("ms") {
                        PhaseEvery::Millis(integer(k, ms)?.max(1))
                    } else if let Some(sec) = v.strip_suffix('s') {
                        PhaseEvery::Millis(
                            integer(k, sec)?
                                .max(1)
                                .checked_mul(1000)
                                .ok_or_else(|| bad(k, v, "too long"))?,
                        )
                    } else {
                        let n = integer(k, v)?;
                        if n == 0 {
                            return Err(bad(k, v, "must be at least 1 access"));
                        }
                        PhaseEvery::Accesses(n)
                    }
                }
                ("stride", Pattern::Strided { stride }) => {
                    *stride = integer(k, v)?;
                    if *stride == 0 {
                        return Err(bad(k, v, "stride must be at least 1"));
                    }
                }
                _ => {
                    let valid: Vec<&str> = doc
                        .params
                        .iter()
                        .chain(COMMON_PARAMS)
                        .map(|p| p.key)
                        .collect();
                    return Err(WorkloadSpecError::UnknownParam {
                        pattern: doc.name.into(),
                        key: k.into(),
                        valid: valid.join(", "),
                    });
                }
            }
        }
        if let Pattern::PhaseShift {
            ws_pct, shift_pct, ..
        } = &mut spec.pattern
        {
            if shift_pct.is_nan() {
                *shift_pct = *ws_pct;
            }
        }
        if let Some(w) = write_pct {
            spec.op = match spec.op {
                // A share that rounds to 0% or 100% still mixes: keep both kinds of access.
                Op::Read | Op::Mix(_) if w > 0.0 && w < 100.0 => {
                    Op::Mix((w.round() as u8).clamp(1, 99))
                }
                _ if w >= 100.0 => Op::Write,
                _ if w <= 0.0 => Op::Read,
                op => op,
            };
        }
        Ok(spec)
    }
}

impl fmt::Display for WorkloadSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pattern {
            Pattern::Sequential => write!(f, "seq")?,
            Pattern::Uniform => write!(f, "uniform")?,
            Pattern::Zipfian { s } => write!(f, "zipf:s={s}")?,
            Pattern::HotCold { hot_pct, p_pct } => write!(f, "hotcold:hot={hot_pct}%,p={p_pct}%")?,
            Pattern::PhaseShift {
                ws_pct,
                shift_pct,
                every,
            } => {
                write!(f, "phase:ws={ws_pct}%,shift={shift_pct}%,every=")?;
                match every {
                    PhaseEvery::Accesses(n) => write!(f, "{n}")?,
                    PhaseEvery::Millis(ms) => write!(f, "{ms}ms")?,
                }
            }
            Pattern::Strided { stride } => write!(f, "strided:stride={stride}")?,
        }
        let sep = if matches!(self.pattern, Pattern::Sequential | Pattern::Uniform) {
            ':'
        } else {
            ','
        };
        match self.op {
            Op::Read => write!(f, "{sep}op=read")?,
            Op::Write => write!(f, "{sep}op=write")?,
            Op::Mix(w) => write!(f, "{sep}op=mix,write={w}%")?,
        }
        if self.huge_units {
            write!(f, ",gran=2m")?;
        }
        if self.sharing == Sharing::Shared {
            write!(f, ",share=shared")?;
        }
        if self.seed != 1 {
            write!(f, ",seed={}", self.seed)?;
        }
        if let Some(n) = self.ops {
            write!(f, ",ops={n}")?;
        }
        Ok(())
    }
}

impl WorkloadSpec {
    /// Pattern parameters for a region of `pages` 4 KiB pages.
    pub fn params(&self, pages: u64) -> PatternParams {
        let unit_pages = if self.huge_units { PAGES_PER_2M } else { 1 };
        let units = (pages / unit_pages).max(1);
        let frac = |pct: f64| ((units as f64 * pct / 100.0).round() as u64).clamp(1, units);
        let p32 = |pct: f64| ((pct / 100.0) * ALWAYS as f64).round() as u64;
        let mut p = PatternParams {
            kind: 0,
            pages: units * unit_pages,
            unit_pages,
            fixed_word: u64::MAX,
            write_p32: match self.op {
                Op::Read => 0,
                Op::Write => ALWAYS,
                Op::Mix(w) => p32(f64::from(w)),
            },
            ..Default::default()
        };
        p.kind = match self.pattern {
            Pattern::Sequential => PatternKind::Sequential,
            Pattern::Uniform => PatternKind::Uniform,
            Pattern::Zipfian { .. } => PatternKind::Zipfian,
            Pattern::HotCold { hot_pct, p_pct } => {
                p.hot_units = frac(hot_pct);
                p.hot_p32 = p32(p_pct);
                PatternKind::HotCold
            }
            Pattern::PhaseShift {
                ws_pct,
                shift_pct,
                every,
            } => {
                p.window = frac(ws_pct);
                p.shift = ((units as f64 * shift_pct / 100.0).round() as u64).min(units);
                p.phase_ops = match every {
                    PhaseEvery::Accesses(n) => n,
                    PhaseEvery::Millis(_) => 0,
                };
                PatternKind::PhaseShift
            }
            Pattern::Strided { stride } => {
                p.stride = stride;
                PatternKind::Strided
            }
        } as u64;
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_issue_examples() {
        let s: WorkloadSpec = "hotcold:hot=10%,p=90%,op=read".parse().unwrap();
        assert_eq!(
            s.pattern,
            Pattern::HotCold {
                hot_pct: 10.0,
                p_pct: 90.0
            }
        );
        assert_eq!(s.op, Op::Read);
        let s: WorkloadSpec = "seq-write".parse().unwrap();
        assert_eq!((s.pattern, s.op), (Pattern::Sequential, Op::Write));
        let s: WorkloadSpec = "phase:ws=20%,every=500ms".parse().unwrap();
        assert_eq!(
            s.pattern,
            Pattern::PhaseShift {
                ws_pct: 20.0,
                shift_pct: 20.0,
                every: PhaseEvery::Millis(500)
            }
        );
        let s: WorkloadSpec = "uniform:op=mix,write=30%,gran=2m,share=shared"
            .parse()
            .unwrap();
        assert_eq!(s.op, Op::Mix(30));
        assert!(s.huge_units);
    }

    #[test]
    fn errors_name_the_field() {
        let e = |s: &str| s.parse::<WorkloadSpec>().unwrap_err().to_string();
        assert!(
            e("hotcold:hot=150%").contains("'hot=150%'"),
            "{}",
            e("hotcold:hot=150%")
        );
        assert!(e("bogus").contains("unknown workload pattern 'bogus'"));
        assert!(e("seq:hot=1%").contains("unknown parameter 'hot'"));
        assert!(e("strided:stride=0").contains("stride"));
        assert!(e("uniform:op=fly").contains("'op=fly'"));
        assert!(e("uniform:ops").contains("key=value"));
        assert_eq!(
            e("seq:op=read,op=write"),
            "workload parameter 'op' given twice (op=read and op=write)"
        );
        assert_eq!(
            e("seq-write:op=read"),
            "workload parameter 'op' given twice (the -write shorthand and op=read)"
        );
        assert!(e("hotcold:hot=5%, hot=6%").contains("'hot' given twice"));
        assert!(e("phase:every=99999999999999999s").contains("too long"));
    }

    // 2048 cases per property (about 0.1 s): any string, and strings built from the spec's own
    // vocabulary (patterns, keys, values, separators) so the parser's deeper branches are reached.
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        #[test]
        fn any_string_parses_or_errs(s in "\\PC{0,40}") {
            let _ = s.parse::<WorkloadSpec>();
        }

        #[test]
        fn spec_like_strings_parse_or_err(
            head in "(seq|uniform|zipf|hotcold|phase|strided|random|bogus)(-read|-write|-mix|-x)?",
            items in proptest::collection::vec(
                ("(op|write|gran|share|seed|ops|s|hot|p|ws|shift|every|stride|x)?",
                 "(=)?",
                 "(read|mix|2m|4k|shared|[0-9]{0,25}(\\.[0-9]{1,3})?(%|ms|s|k|M|G)?|nan|inf|-1)"),
                0..6,
            ),
        ) {
            let body: Vec<String> = items.iter().map(|(k, eq, v)| format!("{k}{eq}{v}")).collect();
            let spec = format!("{head}:{}", body.join(","));
            if let Ok(w) = spec.parse::<WorkloadSpec>() {
                // What parses prints back to the same spec.
                let again: WorkloadSpec = w.to_string().parse().expect("display parses");
                proptest::prop_assert_eq!(&again.to_string(), &w.to_string());
                let _ = w.params(1 << 18);
            }
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "hotcold:hot=10%,p=90%,op=read",
            "zipf:s=1.2,op=mix,write=25%",
            "phase:ws=5%,every=1000",
            "strided:stride=3,gran=2m",
            // A write share that rounds to 0% or 100% stays a mix.
            "uniform:op=mix,write=0.4%",
            "uniform:op=mix,write=99.6%",
        ] {
            let a: WorkloadSpec = s.parse().unwrap();
            let b: WorkloadSpec = a.to_string().parse().unwrap();
            assert_eq!(a, b, "{s} -> {a}");
        }
    }

    #[test]
    fn params_scale_with_region() {
        let s: WorkloadSpec = "hotcold:hot=10%,p=90%".parse().unwrap();
        let p = s.params(1000);
        assert_eq!(p.hot_units, 100);
        assert_eq!(p.write_p32, ALWAYS);
    }
}
