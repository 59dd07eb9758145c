//! `agelab lab merge DIR...`: the results directories of `--shard` runs (or any runs of one
//! matrix) become one: the table, `results.json`, `results.ktap`, `junit.xml` and an
//! `index.html` drawn by the caller (the `agelab run --report` page style lives in the CLI
//! crate). A cell no directory ran to the end, or one that ran in two, fails the merge (exit 1)
//! naming it; otherwise the exit status is the matrix's (1 when a cell failed).

use crate::matrix::{self, render_table, Outcome, TableStyle};
use crate::results::{self, Merged};
use crate::LabError;
use clap::Args;
use std::io::IsTerminal as _;
use std::path::PathBuf;

/// `agelab lab merge` options.
#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// Results directories (each with a results.json), e.g. one per shard.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Where to write the merged results (a new directory; default: one named by the time,
    /// ending in -merged, beside the first DIR).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the cells' wall seconds as a durations file for `--shard` (e.g.
    /// selftests/lab/cell-durations.txt).
    #[arg(long)]
    pub write_durations: Option<PathBuf>,
    /// Leave the rows whose every cell passed out of the printed table.
    #[arg(long)]
    pub hide_passed: bool,
}

/// Merges, writes the merged directory and prints the table; returns the exit status.
pub fn run(args: &MergeArgs, html: &dyn Fn(&Merged) -> String) -> Result<i32, LabError> {
    let merged = results::merge(&args.dirs)?;
    let out = match &args.out {
        Some(dir) => {
            std::fs::create_dir(dir).map_err(|source| results::ResultsError::Io {
                path: dir.clone(),
                source,
            })?;
            dir.clone()
        }
        None => {
            let parent = args.dirs[0]
                .parent()
                .map_or_else(|| PathBuf::from("."), PathBuf::from);
            let (_, stamp) = results::utc_stamps(std::time::SystemTime::now());
            results::create_unique_dir(&parent, &stamp, "-merged")?
        }
    };
    // Cell logs stay in the shards' directories: the merged record points there, relative to
    // the merged directory (so the tree can move as a whole, as CI artefacts do).
    let mut merged = merged;
    for (cell, src) in merged.record.cells.iter_mut().zip(&merged.sources) {
        for path in [&mut cell.log, &mut cell.ktap].into_iter().flatten() {
            *path = relative_path(&src.join(&*path), &out);
        }
    }
    let record = &merged.record;
    let grid = record.grid();
    let table = render_table(&record.kernels, &record.tests, &grid, TableStyle::default());
    results::write_run_files(&out, &|_| out.clone(), record, &table)?;
    results::write_file(&out, "index.html", &html(&merged))?;
    if let Some(path) = &args.write_durations {
        std::fs::write(path, record.durations().render()).map_err(|source| {
            results::ResultsError::Io {
                path: path.clone(),
                source,
            }
        })?;
    }
    let style = TableStyle {
        colour: crate::colour::wanted_here(std::io::stdout().is_terminal()),
        hide_passed: args.hide_passed,
    };
    print!(
        "{}",
        render_table(&record.kernels, &record.tests, &grid, style)
    );
    let outcomes: Vec<Outcome> = record.cells.iter().map(|c| c.outcome()).collect();
    matrix::print_closing_lines(&outcomes);
    eprintln!(
        "agelab lab merge: {} cells from {} directories in {}",
        record.cells.len(),
        args.dirs.len(),
        out.display()
    );
    Ok(i32::from(outcomes.iter().any(Outcome::fails_matrix)))
}

/// `target` as a path relative to directory `base` (both made absolute first; `..` where they
/// part).
pub fn relative_path(target: &std::path::Path, base: &std::path::Path) -> String {
    let abs = |p: &std::path::Path| {
        std::fs::canonicalize(p)
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    let (t, b) = (abs(target), abs(base));
    let (tc, bc): (Vec<_>, Vec<_>) = (t.components().collect(), b.components().collect());
    let common = tc.iter().zip(&bc).take_while(|(x, y)| x == y).count();
    let mut rel = PathBuf::new();
    for _ in common..bc.len() {
        rel.push("..");
    }
    for c in &tc[common..] {
        rel.push(c);
    }
    rel.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_to_the_common_directory() {
        use std::path::Path;
        assert_eq!(
            relative_path(Path::new("/r/a/k/t.log"), Path::new("/r/m")),
            "../a/k/t.log"
        );
        assert_eq!(relative_path(Path::new("/r/m/x"), Path::new("/r/m")), "x");
    }
}
