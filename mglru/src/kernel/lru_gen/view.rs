//! The kernel's generations of one memcg, in a form printable beside the engine's own.

use super::LruGenDebugfs;
use std::fmt::Write;

/// One kernel generation (summed over the selected nodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewGeneration {
    /// Sequence number.
    pub seq: u64,
    /// Age in ms (the oldest age among the nodes summed).
    pub age_ms: u64,
    /// Anon (and shmem) pages.
    pub anon: u64,
    /// File pages.
    pub file: u64,
}

impl ViewGeneration {
    /// anon + file.
    pub fn pages(&self) -> u64 {
        self.anon + self.file
    }
}

/// The kernel's per-generation counts of one memcg, youngest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LruGenView {
    /// lru_gen memcg id.
    pub memcg_id: u64,
    /// cgroup path.
    pub path: String,
    /// Generations, youngest (max_seq) first.
    pub generations: Vec<ViewGeneration>,
}

/// One of the engine's generations, for printing beside the kernel's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineGeneration {
    /// The engine's name or number for it.
    pub label: String,
    /// Age in ms.
    pub age_ms: u64,
    /// Pages.
    pub pages: u64,
}

impl LruGenView {
    /// The view of memcg `memcg_id` on `node` (all nodes summed by seq when `None`).
    pub fn from_listing(listing: &LruGenDebugfs, memcg_id: u64, node: Option<u32>) -> Option<Self> {
        let m = listing.memcg(memcg_id)?;
        let mut gens: Vec<ViewGeneration> = Vec::new();
        for n in m
            .nodes
            .iter()
            .filter(|n| node.is_none_or(|want| want == n.node))
        {
            for g in &n.generations {
                match gens.iter_mut().find(|v| v.seq == g.seq) {
                    Some(v) => {
                        v.anon += g.anon;
                        v.file += g.file;
                        v.age_ms = v.age_ms.max(g.age_ms);
                    }
                    None => gens.push(ViewGeneration {
                        seq: g.seq,
                        age_ms: g.age_ms,
                        anon: g.anon,
                        file: g.file,
                    }),
                }
            }
        }
        if gens.is_empty() {
            return None;
        }
        gens.sort_by_key(|g| std::cmp::Reverse(g.seq));
        Some(LruGenView {
            memcg_id,
            path: m.path.clone(),
            generations: gens,
        })
    }

    /// Total pages.
    pub fn pages(&self) -> u64 {
        self.generations.iter().map(ViewGeneration::pages).sum()
    }

    /// A two-column table, youngest first: kernel generations on the left, `engine`'s (also
    /// youngest first) on the right.
    pub fn side_by_side(&self, engine: &[EngineGeneration]) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<44} | engine",
            format!("kernel memcg {} {}", self.memcg_id, self.path)
        );
        let _ = writeln!(
            s,
            "{:>6} {:>10} {:>12} {:>12} | {:>8} {:>10} {:>12}",
            "seq", "age_ms", "anon", "file", "gen", "age_ms", "pages"
        );
        for i in 0..self.generations.len().max(engine.len()) {
            let left = self.generations.get(i).map_or_else(
                || format!("{:44}", ""),
                |g| {
                    format!(
                        "{:>6} {:>10} {:>12} {:>12}",
                        g.seq, g.age_ms, g.anon, g.file
                    )
                },
            );
            let right = engine.get(i).map_or_else(String::new, |e| {
                format!("{:>8} {:>10} {:>12}", e.label, e.age_ms, e.pages)
            });
            let _ = writeln!(s, "{left} | {right}");
        }
        s
    }
}
