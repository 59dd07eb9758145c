//! `AgeHeatmap`: page age over time as an SVG — guest pages down, passes across.
//!
//! Pages are grouped into at most a fixed number of rows of consecutive guest pages; each pass
//! adds a column holding every row's mean page age (age of the generation each page last joined).
//! Colours run from red (just accessed) through yellow to blue (oldest seen) on a log scale, so a
//! sub-second working set and a minutes-old cold region are both readable; grey marks rows
//! whose pages are all reclaimed. The SVG is plain string building.

use std::fmt::Write as _;
use std::time::Instant;

use super::generations::{Generations, NOT_RESIDENT};

/// Most rows a heatmap uses.
pub const MAX_HEATMAP_ROWS: usize = 512;

/// Recorded mean page ages per row and pass.
#[derive(Clone, Debug, PartialEq)]
pub struct AgeHeatmap {
    pages: u64,
    pages_per_row: u64,
    rows: usize,
    /// One column per pass: mean age in ms per row, NaN when the row has no resident page.
    columns: Vec<Vec<f32>>,
}

impl AgeHeatmap {
    /// A heatmap over `pages` pages with at most `max_rows` rows (capped at 512).
    pub fn new(pages: u64, max_rows: usize) -> Self {
        let max_rows = max_rows.clamp(1, MAX_HEATMAP_ROWS) as u64;
        let pages_per_row = pages.div_ceil(max_rows).max(1);
        let rows = pages.div_ceil(pages_per_row) as usize;
        AgeHeatmap {
            pages,
            pages_per_row,
            rows,
            columns: Vec::new(),
        }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Guest pages per row.
    pub fn pages_per_row(&self) -> u64 {
        self.pages_per_row
    }

    /// Recorded columns (passes); each holds one mean age in ms per row, NaN when empty.
    pub fn columns(&self) -> &[Vec<f32>] {
        &self.columns
    }

    /// Adds a column from the current state.
    pub fn record(&mut self, gens: &Generations, now: Instant) {
        let births = gens.births_ns();
        let now_ns = u64::try_from(now.saturating_duration_since(gens.epoch()).as_nanos())
            .unwrap_or(u64::MAX);
        let per_row = usize::try_from(self.pages_per_row).unwrap_or(usize::MAX);
        let column = gens
            .stored_seqs()
            .chunks(per_row)
            .map(|row| {
                // Mean age = now − mean birth; summing births keeps the per-page work to a load
                // and an add.
                let (mut sum, mut n) = (0u128, 0u64);
                for &s in row {
                    if s != NOT_RESIDENT {
                        sum += u128::from(births.get(s as usize).copied().unwrap_or(0));
                        n += 1;
                    }
                }
                if n == 0 {
                    f32::NAN
                } else {
                    let mean_birth = (sum / u128::from(n)) as u64;
                    now_ns.saturating_sub(mean_birth) as f32 / 1e6
                }
            })
            .collect();
        self.columns.push(column);
    }

    /// Renders the heatmap; `title` goes on top.
    pub fn to_svg(&self, title: &str) -> String {
        const LEFT: usize = 70;
        const TOP: usize = 30;
        const BOTTOM: usize = 40;
        let cell_w = (1200 / self.columns.len().max(1)).clamp(1, 12);
        let cell_h = if self.rows <= 128 { 3 } else { 1 };
        // Wide enough for the caption even with few passes.
        let width = (LEFT + cell_w * self.columns.len() + 20).max(760);
        let height = TOP + cell_h * self.rows + BOTTOM;
        let max_age = self
            .columns
            .iter()
            .flatten()
            .copied()
            .filter(|a| a.is_finite())
            .fold(0f32, f32::max);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="11">"#
        );
        let _ = writeln!(s, r#"<text x="{LEFT}" y="18">{}</text>"#, escape(title));
        for (x, col) in self.columns.iter().enumerate() {
            // Runs of equal colour become one rect: a mostly uniform column is a handful of
            // elements instead of 512.
            let mut y = 0;
            while y < col.len() {
                let colour = colour_of(col[y], max_age);
                let mut end = y + 1;
                while end < col.len() && colour_of(col[end], max_age) == colour {
                    end += 1;
                }
                let _ = writeln!(
                    s,
                    r#"<rect x="{}" y="{}" width="{cell_w}" height="{}" fill="{colour}"/>"#,
                    LEFT + x * cell_w,
                    TOP + y * cell_h,
                    (end - y) * cell_h
                );
                y = end;
            }
        }
        let bottom = TOP + self.rows * cell_h;
        let _ = writeln!(
            s,
            r#"<text x="2" y="{}">page 0</text><text x="2" y="{}">page {}</text>"#,
            TOP + 10,
            bottom,
            self.pages.saturating_sub(1)
        );
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{}">pass 1 → {} (x), guest page (y), {} pages/row; red new → blue {:.0} ms; grey reclaimed</text>"#,
            bottom + 16,
            self.columns.len(),
            self.pages_per_row,
            max_age
        );
        s.push_str("</svg>\n");
        s
    }
}

/// Colour for a mean age: log-scaled red → yellow → blue, grey for NaN.
fn colour_of(age_ms: f32, max_age_ms: f32) -> String {
    if !age_ms.is_finite() {
        return "#bbbbbb".to_string();
    }
    let t = if max_age_ms <= 0.0 {
        0.0
    } else {
        ((1.0 + age_ms).ln() / (1.0 + max_age_ms).ln()).clamp(0.0, 1.0)
    };
    // Quantised to 32 steps so runs of nearly equal ages merge into one rect.
    let t = (t * 32.0).round() / 32.0;
    let (a, b, u) = if t < 0.5 {
        ((215.0, 48.0, 31.0), (254.0, 224.0, 144.0), t * 2.0)
    } else {
        ((254.0, 224.0, 144.0), (44.0, 123.0, 182.0), t * 2.0 - 1.0)
    };
    let mix = |x: f32, y: f32| (x + (y - x) * u).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(a.0, b.0),
        mix(a.1, b.1),
        mix(a.2, b.2)
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
