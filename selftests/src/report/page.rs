//! The page frame every report shares: its style, the script-error marker, a chart's figure
//! (or its no-data line) and the key/value tables.

use std::fmt::Write as _;

use super::svg::esc;
use super::HostFacts;

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1320px}\
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 6px}\
table{border-collapse:collapse;font-size:13px;margin:6px 0}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}\
th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.facts{display:flex;gap:28px;flex-wrap:wrap}.facts table{max-width:640px}\
figure.chart{margin:10px 0 18px;padding:0}figcaption{font-size:13px;color:#444;margin:0 0 4px;max-width:1100px}\
figure.chart svg{max-width:100%;height:auto;display:block}\
p.empty{color:#a00;font-weight:bold}.blind{background:#fee;border:1px solid #c00;padding:6px 10px}\
.js-error{color:#fff;background:#c00;padding:4px 8px}\
td.pass{background:#e6f4e6}td.skip{background:#fdf6d8}td.fail{background:#fbe0e0;font-weight:bold}\
td.timeout{background:#f3e0f7;font-weight:bold}td.other{background:#eee}";

/// Installed first: any script error is written into the page, where a reader (or the render
/// test) sees it.
const ONERROR: &str = "window.onerror=function(m,src,line){var d=document.getElementById('js-errors')||document.documentElement;\
var p=document.createElement('p');p.className='js-error';p.textContent='script error: '+m+' (line '+line+')';d.appendChild(p);};";

/// Opens the group holding a chart's data shapes (what the render check counts; axes, ticks
/// and legends are outside it).
pub(super) const DATA: &str = "<g class=\"data\">\n";

pub(super) fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<script>{ONERROR}</script>\n<style>{STYLE}</style></head>\n<body><div id=\"js-errors\"></div>\n{body}</body></html>\n",
        esc(title)
    )
}

pub(super) fn figure(id: &str, caption: &str, content: Option<String>, why_empty: &str) -> String {
    format!(
        "<figure id=\"{id}\" class=\"chart\"><figcaption>{}</figcaption>\n{}</figure>\n",
        esc(caption),
        content.unwrap_or_else(|| format!("<p class=\"empty\">no data: {}</p>", esc(why_empty)))
    )
}

pub(super) fn kv_table(s: &mut String, title: &str, rows: &[(String, String)]) {
    let _ = write!(s, "<table><tr><th colspan=\"2\">{}</th></tr>", esc(title));
    for (k, v) in rows {
        let _ = write!(s, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(v));
    }
    s.push_str("</table>\n");
}

pub(super) fn host_rows(host: &HostFacts) -> Vec<(String, String)> {
    vec![
        ("kernel (uname -r)".into(), host.kernel.clone()),
        ("KVM".into(), host.kvm.clone()),
        ("KVM modules".into(), host.kvm_modules.join(", ")),
        ("lru_gen".into(), host.lru_gen.clone()),
    ]
}
