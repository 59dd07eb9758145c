//! kernel_selfcheck: every kernel interface agelab's access sources use, exercised for real
//! (`agelab::scenarios::kernel_interfaces`), as a kselftest: KTAP, exit 0 when everything that
//! could run passed, 1 on any failure, 4 when everything was skipped, 2 for a bad command line.
//! Meant for the lab kernels (`agelab lab --kernel debian-7.2 -- kernel_selfcheck`) and runs
//! anywhere.

use agelab::ktap::{OrFail, TestPlan};
use agelab::scenarios::kernel_interfaces::{shmem_helper, ALL, HELPER_ENV};
use agelab_mglru::host_guard::{install_panic_hook, install_signal_cleanup};
use clap::Parser;

const NAME: &str = "kernel_selfcheck";
const USAGE: &str = "usage: kernel_selfcheck [-h] [--size-mib N]
  --size-mib: test memory of each check in MiB (default 64)";

#[derive(Debug, Parser)]
#[command(name = NAME, args_override_self = true)]
struct Args {
    /// Test memory of each check, MiB.
    #[arg(long, value_name = "N", default_value = "64", value_parser = agelab::args::positive::<usize>)]
    size_mib: usize,
}

fn main() {
    // The lru_gen check runs this binary again as its shmem helper.
    if let Ok(pages) = std::env::var(HELPER_ENV) {
        shmem_helper(pages.parse().or_fail());
    }
    let args: Args = agelab::args::parse(NAME, USAGE);
    install_signal_cleanup().or_fail();
    install_panic_hook();
    let pages = args.size_mib * 256;
    let mut plan = TestPlan::new();
    let checks: Vec<_> = ALL
        .iter()
        .map(|&(name, check)| (plan.add(name), check))
        .collect();
    let mut k = plan.start();
    for (id, check) in checks {
        k.verdict(id, &check(pages));
    }
    k.finish()
}
