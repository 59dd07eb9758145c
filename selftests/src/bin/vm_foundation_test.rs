//! vm_foundation_test: the VMM's foundation scenarios as a kselftest (KTAP, exit 0/1/4), so they
//! run on this host (`make selftests`) and on every lab kernel (`make lab`).

use agelab::ktap::Ktap;
use agelab::scenarios::foundation::{Outcome, ALL};

fn main() {
    let mut k = Ktap::new(ALL.len());
    for (name, scenario) in ALL {
        match scenario() {
            Ok(Outcome::Pass) => k.result(true, name),
            Ok(Outcome::Partial(reason)) => {
                k.diag(&format!("{name}: partly skipped: {reason}"));
                k.result(true, name);
            }
            Err(e) => {
                k.diag(&format!("{name}: {e}"));
                k.result(false, name);
            }
        }
    }
    k.finish()
}
