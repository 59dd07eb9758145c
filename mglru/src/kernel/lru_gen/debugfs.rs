//! Parser of `/sys/kernel/debug/lru_gen` and `lru_gen_full`, for the 6.1 and 7.2 layouts.
//!
//! Layout (per memcg, then per node, then one line per generation):
//! ```text
//! memcg     2 /agetest          <- 6.1 pads the id to 5 columns, 7.2 does not
//!  node     0
//!           2        792      16385           0     <- seq age_ms anon file
//!                      0          0r          0e ...   <- full only: tier lines (7 tokens)
//!                                 0L          0O ...   <- full only: mm-walk stats (6.1: 6, 7.2: 4)
//! ```
//! Generation lines put the sequence number within the first 11 columns; tier and mm-stat lines are
//! indented past column 12. Anything that fits neither, and any input not ending in a newline (a
//! truncated read), is an error.

use super::LruGenError;

/// A generation needs at least this many per node (MIN_NR_GENS); fewer means a truncated listing.
pub const MIN_NR_GENS: usize = 2;
/// Generation lines have at most this much indentation (`" %10lu"`); detail lines have more.
const GEN_LINE_MAX_INDENT: usize = 11;

/// One parsed listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LruGenDebugfs {
    /// Memcg blocks in listing order.
    pub memcgs: Vec<MemcgLruGen>,
    /// Whether tier lines were present (the `lru_gen_full` format).
    pub full: bool,
}

/// One memcg block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemcgLruGen {
    /// lru_gen memcg id (the one aging/eviction commands take).
    pub id: u64,
    /// cgroup path relative to the memory hierarchy root (`/` for the root).
    pub path: String,
    /// Per-node generations.
    pub nodes: Vec<NodeLruGen>,
}

/// One node of a memcg.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeLruGen {
    /// NUMA node id.
    pub node: u32,
    /// Generations, oldest (lowest seq) first.
    pub generations: Vec<GenerationStats>,
}

/// One generation line (and, in the full format, its details).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenerationStats {
    /// Sequence number (max_seq is the youngest).
    pub seq: u64,
    /// Milliseconds since the generation was born.
    pub age_ms: u64,
    /// Anonymous pages (shmem/tmpfs count here too).
    pub anon: u64,
    /// File pages.
    pub file: u64,
    /// Tier lines (full format only).
    pub tiers: Vec<TierStats>,
    /// mm-walk statistics line (full format only), suffix letters dropped.
    pub mm_stats: Vec<u64>,
}

impl GenerationStats {
    /// Pages of both types.
    pub fn pages(&self) -> u64 {
        self.anon.saturating_add(self.file)
    }
}

/// One tier line of the full format: three counters per type, suffix letters dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TierStats {
    /// Tier index.
    pub tier: u32,
    /// Anon counters (refaulted/evicted/protected or their running averages).
    pub anon: [u64; 3],
    /// File counters.
    pub file: [u64; 3],
}

impl MemcgLruGen {
    /// The node with id `node`.
    pub fn node(&self, node: u32) -> Option<&NodeLruGen> {
        self.nodes.iter().find(|n| n.node == node)
    }
}

impl NodeLruGen {
    /// The youngest generation's seq (max_seq).
    pub fn max_seq(&self) -> Option<u64> {
        self.generations.last().map(|g| g.seq)
    }
    /// The oldest listed generation's seq.
    pub fn min_seq(&self) -> Option<u64> {
        self.generations.first().map(|g| g.seq)
    }
}

impl LruGenDebugfs {
    /// The memcg with lru_gen id `id`.
    pub fn memcg(&self, id: u64) -> Option<&MemcgLruGen> {
        self.memcgs.iter().find(|m| m.id == id)
    }

    /// The memcg whose cgroup path is `path` (e.g. `/agetest`).
    pub fn memcg_by_path(&self, path: &str) -> Option<&MemcgLruGen> {
        self.memcgs.iter().find(|m| m.path == path)
    }

    /// Parses a whole listing.
    pub fn parse(text: &str) -> Result<Self, LruGenError> {
        let bad = |line: usize, msg: String| LruGenError::Parse { line, msg };
        if text.is_empty() {
            return Err(bad(0, "empty listing".into()));
        }
        if !text.ends_with('\n') {
            return Err(bad(
                text.lines().count(),
                "listing does not end with a newline (truncated read)".into(),
            ));
        }
        let mut out = LruGenDebugfs::default();
        for (i, raw) in text.lines().enumerate() {
            let ln = i + 1;
            let trimmed = raw.trim_start();
            let indent = raw.len() - trimmed.len();
            if let Some(rest) = raw.strip_prefix("memcg ") {
                let rest = rest.trim_start();
                let (id, path) = rest.split_once(' ').unwrap_or((rest, ""));
                let id = parse_num(id).ok_or_else(|| bad(ln, format!("bad memcg id {id:?}")))?;
                out.memcgs.push(MemcgLruGen {
                    id,
                    path: path.to_string(),
                    nodes: Vec::new(),
                });
            } else if let Some(rest) = trimmed.strip_prefix("node ") {
                let memcg = out
                    .memcgs
                    .last_mut()
                    .ok_or_else(|| bad(ln, "node line before any memcg line".into()))?;
                let node = rest
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| bad(ln, format!("bad node id {:?}", rest.trim())))?;
                memcg.nodes.push(NodeLruGen {
                    node,
                    generations: Vec::new(),
                });
            } else if trimmed.is_empty() {
                return Err(bad(ln, "blank line".into()));
            } else {
                let node = out
                    .memcgs
                    .last_mut()
                    .and_then(|m| m.nodes.last_mut())
                    .ok_or_else(|| bad(ln, "generation data before any node line".into()))?;
                let tokens: Vec<&str> = trimmed.split_whitespace().collect();
                if indent <= GEN_LINE_MAX_INDENT {
                    let nums: Option<Vec<u64>> = tokens.iter().map(|t| parse_num(t)).collect();
                    let nums = match nums {
                        Some(n) if n.len() == 4 => n,
                        _ => {
                            return Err(bad(
                                ln,
                                format!("expected `seq age_ms anon file`, got {trimmed:?}"),
                            ))
                        }
                    };
                    if let Some(prev) = node.generations.last() {
                        if nums[0] <= prev.seq {
                            return Err(bad(
                                ln,
                                format!(
                                    "generation {} after {}: not increasing",
                                    nums[0], prev.seq
                                ),
                            ));
                        }
                    }
                    node.generations.push(GenerationStats {
                        seq: nums[0],
                        age_ms: nums[1],
                        anon: nums[2],
                        file: nums[3],
                        tiers: Vec::new(),
                        mm_stats: Vec::new(),
                    });
                } else {
                    let gen = node
                        .generations
                        .last_mut()
                        .ok_or_else(|| bad(ln, "tier line before any generation line".into()))?;
                    let nums: Option<Vec<u64>> = tokens.iter().map(|t| parse_suffixed(t)).collect();
                    let nums =
                        nums.ok_or_else(|| bad(ln, format!("bad tier/stat line {trimmed:?}")))?;
                    out.full = true;
                    if !gen.mm_stats.is_empty() {
                        return Err(bad(ln, "detail line after the mm-stats line".into()));
                    }
                    if nums.len() == 7 {
                        gen.tiers.push(TierStats {
                            tier: u32::try_from(nums[0])
                                .map_err(|_| bad(ln, "tier index too large".into()))?,
                            anon: [nums[1], nums[2], nums[3]],
                            file: [nums[4], nums[5], nums[6]],
                        });
                    } else if !nums.is_empty() && nums.len() < 7 && !gen.tiers.is_empty() {
                        gen.mm_stats = nums;
                    } else {
                        return Err(bad(ln, format!("unexpected detail line {trimmed:?}")));
                    }
                }
            }
        }
        out.validate()?;
        Ok(out)
    }

    fn validate(&self) -> Result<(), LruGenError> {
        let bad = |msg: String| LruGenError::Parse { line: 0, msg };
        if self.memcgs.is_empty() {
            return Err(bad("no memcg block".into()));
        }
        let mut shape: Option<(usize, usize)> = None;
        for m in &self.memcgs {
            if m.nodes.is_empty() {
                return Err(bad(format!("memcg {} has no node (truncated)", m.id)));
            }
            for n in &m.nodes {
                if n.generations.len() < MIN_NR_GENS {
                    return Err(bad(format!(
                        "memcg {} node {} lists {} generation(s), fewer than {MIN_NR_GENS} (truncated)",
                        m.id,
                        n.node,
                        n.generations.len()
                    )));
                }
                if self.full {
                    // The kernel prints the same number of tier lines and one stats line for
                    // every generation; a shorter last one means the read was cut.
                    for g in &n.generations {
                        let s = (g.tiers.len(), usize::from(!g.mm_stats.is_empty()));
                        match shape {
                            None => shape = Some(s),
                            Some(expected) if expected != s => {
                                return Err(bad(format!(
                                    "memcg {} node {} gen {}: {} tier line(s), {} stats line(s); \
                                     expected {} and {} (truncated)",
                                    m.id, n.node, g.seq, s.0, s.1, expected.0, expected.1
                                )))
                            }
                            Some(_) => {}
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn parse_num(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A counter followed by at most one flag letter (`0r`, `12T`, `0x`).
fn parse_suffixed(s: &str) -> Option<u64> {
    let digits = s
        .strip_suffix(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(s);
    parse_num(digits)
}
