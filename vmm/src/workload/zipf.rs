//! Zipf alias tables: exact O(1) sampling in the guest without floating point there.

use agelab_guest::pattern::AliasEntry;

/// Builds a Walker/Vose alias table for P(k) ∝ 1/(k+1)^s over `n` ranks.
pub fn alias_table(n: u64, s: f64) -> Vec<AliasEntry> {
    let n = n.max(1) as usize;
    let weights: Vec<f64> = (0..n).map(|k| 1.0 / ((k + 1) as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let mut scaled: Vec<f64> = weights.iter().map(|w| w / total * n as f64).collect();
    let mut table = vec![
        AliasEntry {
            keep_p32: u32::MAX,
            alias: 0
        };
        n
    ];
    let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < 1.0);
    while let (Some(s_i), Some(&l_i)) = (small.pop(), large.last()) {
        table[s_i] = AliasEntry {
            keep_p32: (scaled[s_i] * 4_294_967_296.0).min(u32::MAX as f64) as u32,
            alias: l_i as u32,
        };
        scaled[l_i] -= 1.0 - scaled[s_i];
        if scaled[l_i] < 1.0 {
            large.pop();
            small.push(l_i);
        }
    }
    for i in large.into_iter().chain(small) {
        table[i] = AliasEntry {
            keep_p32: u32::MAX,
            alias: i as u32,
        };
    }
    table
}

/// The exact probability of rank `k` under the table (for distribution tests).
pub fn table_probability(table: &[AliasEntry], k: usize) -> f64 {
    let n = table.len() as f64;
    let keep = |e: &AliasEntry| e.keep_p32 as f64 / 4_294_967_296.0;
    let mut p = keep(&table[k]) / n;
    for e in table {
        if e.alias as usize == k && e.keep_p32 != u32::MAX {
            p += (1.0 - keep(e)) / n;
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_reproduces_zipf() {
        let t = alias_table(1000, 0.99);
        let total: f64 = (0..1000).map(|k| 1.0 / ((k + 1) as f64).powf(0.99)).sum();
        for k in [0, 1, 10, 500, 999] {
            let want = 1.0 / ((k + 1) as f64).powf(0.99) / total;
            let got = table_probability(&t, k);
            assert!(
                (got - want).abs() / want < 1e-6,
                "rank {k}: {got} vs {want}"
            );
        }
    }
}
