//! `agelab workloads`: every pattern with its parameters and defaults.

use agelab_vmm::workload::spec::{COMMON_PARAMS, PATTERNS};

/// Prints the pattern table.
pub fn print() {
    println!(
        "Workload syntax: PATTERN[:key=value,...]  or  PATTERN-OP (e.g. seq-write, uniform-read)"
    );
    println!("Example: agelab run --workload 'hotcold:hot=10%,p=90%,op=read'\n");
    for p in PATTERNS {
        let aliases = if p.aliases.is_empty() {
            String::new()
        } else {
            format!(" (also: {})", p.aliases.join(", "))
        };
        println!("{}{}: {}", p.name, aliases, p.help);
        for param in p.params {
            println!(
                "    {:<8} default {:<10} {}",
                param.key, param.default, param.help
            );
        }
    }
    println!("\nParameters of every pattern:");
    for param in COMMON_PARAMS {
        println!(
            "    {:<8} default {:<10} {}",
            param.key, param.default, param.help
        );
    }
}
