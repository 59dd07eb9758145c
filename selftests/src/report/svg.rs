//! Small inline-SVG chart builders for the HTML report: axes with nice ticks, lines, stacked
//! bars, bars, and points with error bars. Plain string building, like the engine's heatmap.

use std::fmt::Write as _;

/// A categorical palette (colour-blind friendly first entries).
pub const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f", "#bcbd22",
];

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `v` with at most two decimals and no trailing zeros.
pub fn num(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// Ticks from 0 (or `min`) to at least `max` with a 1/2/5 × 10^k step, about `n` of them.
pub fn nice_ticks(min: f64, max: f64, n: usize) -> Vec<f64> {
    let span = (max - min).max(f64::EPSILON);
    let raw = span / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (min / step).floor() * step;
    let mut ticks = Vec::new();
    let mut t = first;
    while t < max + step * 0.999 && ticks.len() < 50 {
        ticks.push(t);
        t += step;
    }
    ticks
}

/// A plot area with linear axes.
#[derive(Clone, Debug)]
pub struct Plot {
    /// Left edge of the plot area, px.
    pub x0: f64,
    /// Top edge of the plot area, px.
    pub y0: f64,
    /// Width, px.
    pub w: f64,
    /// Height, px.
    pub h: f64,
    /// X range.
    pub xr: (f64, f64),
    /// Y range.
    pub yr: (f64, f64),
}

impl Plot {
    /// X data → px.
    pub fn x(&self, v: f64) -> f64 {
        self.x0 + (v - self.xr.0) / (self.xr.1 - self.xr.0).max(f64::EPSILON) * self.w
    }

    /// Y data → px.
    pub fn y(&self, v: f64) -> f64 {
        self.y0 + self.h - (v - self.yr.0) / (self.yr.1 - self.yr.0).max(f64::EPSILON) * self.h
    }

    /// Frame, gridlines and tick labels for `yticks`; x ticks as (value, label) pairs; axis titles.
    pub fn axes(
        &self,
        s: &mut String,
        xticks: &[(f64, String)],
        yticks: &[(f64, String)],
        xtitle: &str,
        ytitle: &str,
    ) {
        let bottom = self.y0 + self.h;
        for (v, label) in yticks {
            let y = self.y(*v);
            let _ = writeln!(
                s,
                r##"<line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                self.x0,
                self.x0 + self.w,
                self.x0 - 6.0,
                y + 4.0,
                esc(label)
            );
        }
        let mut lines = 1;
        for (v, label) in xticks {
            let x = self.x(*v);
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{bottom:.1}" y2="{:.1}" stroke="#333"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">"##,
                bottom + 5.0,
                bottom + 18.0,
            );
            // A label may span lines ('\n'), so long bucket names do not run into each other.
            for (i, part) in label.split('\n').enumerate() {
                lines = lines.max(i + 1);
                let _ = write!(
                    s,
                    r#"<tspan x="{x:.1}" dy="{}">{}</tspan>"#,
                    if i == 0 { 0 } else { 14 },
                    esc(part)
                );
            }
            s.push_str("</text>\n");
        }
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#333"/>"##,
            self.x0, self.y0, self.w, self.h
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text transform="translate({:.1} {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            self.x0 + self.w / 2.0,
            bottom + 36.0 + 14.0 * (lines - 1) as f64,
            esc(xtitle),
            self.x0 - 72.0,
            self.y0 + self.h / 2.0,
            esc(ytitle)
        );
    }
}

/// Opens an SVG of `w` × `h` px.
pub fn open(w: f64, h: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    )
}

/// A legend row of colour swatches and names at (`x`, `y`), wrapping at `max_x`.
pub fn legend(s: &mut String, x: f64, y: f64, max_x: f64, items: &[(String, &str)]) {
    let (mut cx, mut cy) = (x, y);
    for (name, colour) in items {
        let w = 22.0 + 7.0 * name.chars().count() as f64;
        if cx + w > max_x && cx > x {
            cx = x;
            cy += 18.0;
        }
        let _ = writeln!(
            s,
            r#"<rect x="{cx:.1}" y="{:.1}" width="12" height="12" fill="{colour}"/><text x="{:.1}" y="{cy:.1}">{}</text>"#,
            cy - 10.0,
            cx + 16.0,
            esc(name)
        );
        cx += w + 12.0;
    }
}
