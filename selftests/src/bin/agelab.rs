//! `agelab`: run guests under KVM while a userspace MGLRU ages their memory.

use agelab::cli;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "agelab",
    version,
    about = "Does page aging really see guest memory?"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Boot a guest, run a workload and age its memory.
    Run(cli::run::RunArgs),
    /// List workload patterns with their parameters and defaults.
    Workloads,
    /// Foundation and workload benchmarks (guest vs native loop, first touch, patterns).
    Bench,
    /// Boot QEMU with a lab kernel and run a command inside it.
    Lab(agelab::lab::LabArgs),
    /// Proactive reclaim: policies, refault SLO controller, zram swap, benchmark table/SVG/JSON.
    Reclaim(cli::reclaim::ReclaimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => match cli::run::run(&args) {
            Ok(report) => {
                if args.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).expect("report serialises")
                    );
                } else {
                    cli::run::print_text(&report);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("agelab run: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Command::Bench => match cli::bench::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("agelab bench: {e}");
                ExitCode::from(1)
            }
        },
        Command::Workloads => {
            cli::workloads::print();
            ExitCode::SUCCESS
        }
        Command::Reclaim(args) => match cli::reclaim::run(&args) {
            Ok(report) => {
                if args.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).expect("report serialises")
                    );
                } else {
                    cli::reclaim::print_text(&report);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("agelab reclaim: {e}");
                ExitCode::from(1)
            }
        },
        Command::Lab(args) => match agelab::lab::run(&args) {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => {
                eprintln!("agelab lab: {e}");
                ExitCode::from(1)
            }
        },
    }
}
