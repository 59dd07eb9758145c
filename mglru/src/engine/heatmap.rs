//! `AgeHeatmap`: page age over time as an SVG — guest pages down, passes across.
//!
//! Pages are grouped into at most a fixed number of rows of consecutive guest pages; each pass
//! adds a column holding every row's mean page age (age of the generation each page last joined).
//! Colours run from red (just accessed) through yellow to blue (oldest seen) on a log scale, so a
//! sub-second working set and a minutes-old cold region are both readable; grey marks rows
//! whose pages are all reclaimed. The SVG is plain string building.

use std::fmt::Write as _;
use std::time::Instant;

use agelab_vmm::PAGE_SIZE;
use serde::Serialize;

use super::generations::{Generations, NOT_RESIDENT};

/// Most rows a heatmap uses.
pub const MAX_HEATMAP_ROWS: usize = 512;

/// Recorded mean page ages per row and pass. Serialises (for `--report`'s `report.json`) with
/// empty rows' NaN ages as `null`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgeHeatmap {
    pages: u64,
    pages_per_row: u64,
    rows: usize,
    /// When each column was recorded, ms since the engine started.
    times_ms: Vec<f64>,
    /// One column per pass: mean age in ms per row, NaN when the row has no resident page.
    columns: Vec<Vec<f32>>,
}

/// Plot area of the rendered heatmap, px: the cells stretch to it whatever the run's length
/// and memory size.
const PLOT_W: f64 = 900.0;
const PLOT_H: f64 = 360.0;
const LEFT: f64 = 86.0;
const TOP: f64 = 34.0;

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
            times_ms: Vec::new(),
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

    /// When each column was recorded, ms since the engine started.
    pub fn times_ms(&self) -> &[f64] {
        &self.times_ms
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
        self.times_ms.push(now_ns as f64 / 1e6);
        self.columns.push(column);
    }

    /// Renders the heatmap with `title` on top: guest address down (ticks in MiB of test
    /// memory), time across (one column per pass, ticks at the passes' times), and a colour
    /// scale with age ticks on the right. The plot area has a fixed size; cells stretch to it.
    pub fn to_svg(&self, title: &str) -> String {
        let n = self.columns.len().max(1);
        let cell_w = PLOT_W / n as f64;
        let cell_h = PLOT_H / self.rows.max(1) as f64;
        let legend_x = LEFT + PLOT_W + 28.0;
        let width = legend_x + 16.0 + 110.0;
        let height = TOP + PLOT_H + 58.0;
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
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="18" font-size="14">{}</text>"#,
            escape(title)
        );
        // The cells are the data (`class="data"`: what a renderer check counts); axes and scale
        // follow outside the group.
        let _ = writeln!(s, r#"<g class="data" shape-rendering="crispEdges">"#);
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
                    r#"<rect x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="{colour}"/>"#,
                    LEFT + x as f64 * cell_w,
                    TOP + y as f64 * cell_h,
                    cell_w + 0.05,
                    (end - y) as f64 * cell_h + 0.05
                );
                y = end;
            }
        }
        s.push_str("</g>\n");
        let bottom = TOP + PLOT_H;
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{PLOT_H}" fill="none" stroke="#333"/>"##
        );
        // Y axis: guest address as offset into test memory, in MiB.
        let mib = self.pages as f64 * PAGE_SIZE as f64 / (1u64 << 20) as f64;
        for i in 0..=4 {
            let y = TOP + PLOT_H * i as f64 / 4.0;
            let _ = writeln!(
                s,
                r##"<line x1="{:.1}" x2="{LEFT}" y1="{y:.1}" y2="{y:.1}" stroke="#333"/><text x="{:.1}" y="{:.1}" text-anchor="end">{} MiB</text>"##,
                LEFT - 5.0,
                LEFT - 8.0,
                y + 4.0,
                trim(mib * i as f64 / 4.0)
            );
        }
        let _ = writeln!(
            s,
            r#"<text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">guest address ({} pages/row)</text>"#,
            TOP + PLOT_H / 2.0,
            self.pages_per_row
        );
        // X axis: one tick per column, labelled at most every ~70 px.
        let every = (70.0 / cell_w).ceil().max(1.0) as usize;
        for (i, t) in self.times_ms.iter().enumerate() {
            let x = LEFT + (i as f64 + 0.5) * cell_w;
            let labelled = i % every == 0 || i + 1 == self.times_ms.len() && i % every > every / 2;
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{bottom}" y2="{:.1}" stroke="#333"/>"##,
                bottom + if labelled { 5.0 } else { 3.0 }
            );
            if labelled {
                let _ = writeln!(
                    s,
                    r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{} s</text>"#,
                    bottom + 18.0,
                    trim(t / 1e3)
                );
            }
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since start (one column per aging pass, {} passes)</text>"#,
            LEFT + PLOT_W / 2.0,
            bottom + 40.0,
            self.columns.len()
        );
        // Colour scale: 32 steps, log-scaled like the cells, youngest at the top.
        let steps = 32;
        for k in 0..steps {
            let t = k as f32 / (steps - 1) as f32;
            let age = ((1.0 + max_age).ln() * t).exp() - 1.0;
            let _ = writeln!(
                s,
                r#"<rect x="{legend_x:.1}" y="{:.2}" width="16" height="{:.2}" fill="{}"/>"#,
                TOP + PLOT_H * 0.8 * k as f64 / steps as f64,
                PLOT_H * 0.8 / steps as f64 + 0.1,
                colour_of(age, max_age)
            );
        }
        let scale_h = PLOT_H * 0.8;
        let mut tick = 1.0f32;
        let mut ticks = vec![0.0f32];
        while tick < max_age {
            ticks.push(tick);
            tick *= 10.0;
        }
        if max_age > 0.0 {
            ticks.push(max_age);
        }
        let mut last_y = f64::NEG_INFINITY;
        for a in ticks {
            let t = if max_age <= 0.0 {
                0.0
            } else {
                ((1.0 + a).ln() / (1.0 + max_age).ln()) as f64
            };
            let y = TOP + scale_h * t;
            // Skip ticks that would overlap the previous label (the max is always shown).
            if y - last_y < 13.0 && a != max_age {
                continue;
            }
            last_y = y;
            let _ = writeln!(
                s,
                r##"<line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#333"/><text x="{:.1}" y="{:.1}">{}</text>"##,
                legend_x + 16.0,
                legend_x + 20.0,
                legend_x + 23.0,
                y + 4.0,
                age_label(a)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{legend_x:.1}" y="{:.1}" width="16" height="12" fill="#bbbbbb"/><text x="{:.1}" y="{:.1}">reclaimed</text><text x="{legend_x:.1}" y="{:.1}">page age</text>"##,
            TOP + scale_h + 20.0,
            legend_x + 23.0,
            TOP + scale_h + 30.0,
            TOP - 12.0
        );
        s.push_str("</svg>\n");
        s
    }
}

/// `1.5`, `12`, `0.25`: at most two decimals, no trailing zeros.
fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// An age for the colour scale: `0 ms`, `100 ms`, `1.5 s`.
fn age_label(ms: f32) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{} s", trim(f64::from(ms) / 1e3))
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
    scale_colour((t * 32.0).round() / 32.0)
}

/// The heatmap's colour for `t` in 0..=1: red (young) through yellow to blue (old). Other
/// charts of page age use it too, so young and old look the same everywhere.
pub fn scale_colour(t: f32) -> String {
    let t = t.clamp(0.0, 1.0);
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
