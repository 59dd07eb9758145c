//! SIGINT in the middle of `agelab run` leaves the host as it was: no memcg, lru_gen knobs
//! unchanged, no extra or changed kdamond. Runs `source_matrix --sigint-check` here; the lab runs
//! the same check with the knobs perturbed first (`sources-sigint` in selftests/lab/matrix.txt),
//! where lru_gen and DAMON actually change state mid-run.

use agelab_vmm::testing::skip;
use std::process::Command;

#[test]
fn sigint_mid_run_leaves_nothing_behind() {
    let out = Command::new(env!("CARGO_BIN_EXE_source_matrix"))
        .arg("--sigint-check")
        .output()
        .expect("running source_matrix");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    match out.status.code() {
        Some(0) => {}
        Some(4) => skip("sources_sigint", text.lines().last().unwrap_or("skipped")),
        c => panic!(
            "sigint check failed ({c:?}):\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
