//! `agelab lab merge`'s page: the merged kernel × test table as one self-contained
//! `index.html` in the report pages' frame, every cell
//! linked to its log in the shard's directory.

use super::page::page;
use super::svg::esc;
use agelab_lab::matrix::Outcome;
use agelab_lab::results::Merged;
use std::fmt::Write as _;

/// The CSS class of a cell with `outcome`.
fn class(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Pass | Outcome::ExpectedFail(_) => "pass",
        Outcome::Skip => "skip",
        Outcome::Timeout => "timeout",
        Outcome::Interrupted | Outcome::NotRun => "other",
        Outcome::Fail(_) | Outcome::Error | Outcome::UnexpectedPass => "fail",
    }
}

/// The page of a merge.
pub fn merged_html(m: &Merged) -> String {
    let r = &m.record;
    let outcomes: Vec<Outcome> = r.cells.iter().map(|c| c.outcome()).collect();
    let failed = outcomes.iter().filter(|o| o.fails_matrix()).count();
    let passed = outcomes.iter().filter(|o| o.passed()).count();
    let skipped = outcomes.iter().filter(|o| **o == Outcome::Skip).count();
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<h1>agelab lab — {}</h1><p>{} kernels × {} tests = {} cells from {} results directories: \
         {passed} passed, {failed} failed, {skipped} skipped.</p>",
        esc(&r.matrix),
        r.kernels.len(),
        r.tests.len(),
        r.cells.len(),
        m.shards.len()
    );
    b.push_str("<h2>Results</h2>\n<table id=\"matrix\"><tr><th>test</th>");
    for k in &r.kernels {
        let _ = write!(b, "<th>{}</th>", esc(k));
    }
    b.push_str("</tr>\n");
    for t in &r.tests {
        let _ = write!(b, "<tr><td>{}</td>", esc(t));
        for k in &r.kernels {
            match r.cell(k, t) {
                Some(c) => {
                    let o = c.outcome();
                    let label = esc(&o.label());
                    let text = match &c.log {
                        Some(log) => format!("<a href=\"{}\">{label}</a>", esc(log)),
                        None => label,
                    };
                    let title = c.detail.as_deref().map(esc).unwrap_or_default();
                    let _ = write!(
                        b,
                        "<td class=\"{}\" title=\"{title}\">{text} <small>{:.0} s</small></td>",
                        class(&o),
                        c.seconds
                    );
                }
                None => b.push_str("<td class=\"other\">-</td>"),
            }
        }
        b.push_str("</tr>\n");
    }
    b.push_str("</table>\n<h2>Runs merged</h2>\n<table><tr><th>directory</th><th>shard</th><th>cells</th><th>wall s</th><th>jobs</th><th>accel</th><th>host kernel</th><th>started (UTC)</th></tr>\n");
    for (dir, s) in &m.shards {
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{:.0}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&dir.display().to_string()),
            s.shard.map_or("-".into(), |s| s.to_string()),
            s.cells.len(),
            s.wall_seconds,
            s.jobs,
            esc(&s.accel),
            esc(&s.host_kernel),
            esc(&s.started_utc)
        );
    }
    b.push_str("</table>\n<p>The same data: <a href=\"results.json\">results.json</a>, <a href=\"junit.xml\">junit.xml</a>, <a href=\"results.ktap\">results.ktap</a>, <a href=\"table.txt\">table.txt</a>.</p>\n");
    page(&format!("agelab lab — {}", r.matrix), &b)
}
