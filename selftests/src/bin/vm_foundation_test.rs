//! vm_foundation_test: the VMM's foundation scenarios as a kselftest (KTAP, exit 0/1/4), so they
//! run on this host (`make selftests`) and on every lab kernel (`make lab`).

use agelab::ktap::{TestPlan, Verdict};
use agelab::scenarios::foundation::{Outcome, ALL};
use clap::Parser;

const USAGE: &str = "usage: vm_foundation_test [-h]
  Runs every foundation scenario of the VMM as one KTAP test.";

/// No options: `-h` and bad arguments are handled like every kselftest binary's.
#[derive(Debug, Parser)]
#[command(name = "vm_foundation_test")]
struct Args {}

fn main() {
    let Args {} = agelab::args::parse("vm_foundation_test", USAGE);
    let mut plan = TestPlan::new();
    let tests: Vec<_> = ALL
        .iter()
        .map(|&(name, scenario)| (plan.add(name), name, scenario))
        .collect();
    let mut k = plan.start();
    for (id, name, scenario) in tests {
        match scenario() {
            Ok(Outcome::Pass) => k.verdict(id, &Verdict::Pass),
            Ok(Outcome::Partial(reason)) => {
                k.diag(&format!("{name}: partly skipped: {reason}"));
                k.verdict(id, &Verdict::Pass);
            }
            Err(e) => k.verdict(id, &Verdict::Fail(e.to_string())),
        }
    }
    k.finish()
}
