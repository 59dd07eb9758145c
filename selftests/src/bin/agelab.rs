//! `agelab`: run guests under KVM while a userspace MGLRU ages their memory.
//!
//! Exit codes, for every subcommand: 0 success, 2 input the user can fix (one error line naming
//! the option, before anything runs), 1 everything else.

use agelab::cli;
use agelab_util::exit::{exit_code_of_status, exit_with, ExitClass, HasExitClass};
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
    /// Benchmarks: foundation (the default), dirty, dirty-layout, scaling, region, engine, uffd.
    Bench(agelab::benchmarks::BenchArgs),
    /// Measure this host's guest page-fault costs (the `host:` line every benchmark prints).
    HostProfile {
        /// Print the profile as JSON instead of the line.
        #[arg(long)]
        json: bool,
    },
    /// Boot QEMU with a lab kernel and run a command inside it.
    Lab(agelab_lab::LabCommand),
    /// Compare kernel A and kernel B (or two command lines): interleaved runs, mean ± 95% CI,
    /// Welch's t-test per metric.
    Ab(agelab_lab::ab::AbArgs),
    /// Mutation matrix: boot the base custom kernel and each mutant of selftests/lab/mutants/
    /// (built from the base's kept tree), run the strict aging tests and the kernel's own
    /// access_tracking_perf_test on each, print the kill table and write JSON.
    Mutants(agelab_lab::mutants::MutantsArgs),
    /// Proactive reclaim: policies, refault SLO controller, zram swap, benchmark table/SVG/JSON.
    Reclaim(cli::reclaim::ReclaimArgs),
    /// Undo host changes left by agelab processes that are gone (SIGKILL, OOM kill, crash), from
    /// the journal in /run/agelab; list entries of live processes (untouched).
    Cleanup,
}

/// Prints a command's report (JSON or text), or its one-line error with the error's exit code.
fn finish<R: serde::Serialize, E: std::fmt::Display + HasExitClass>(
    command: &str,
    result: Result<R, E>,
    json: bool,
    print_text: impl FnOnce(&R),
) -> ExitCode {
    match result {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("report serialises")
                );
            } else {
                print_text(&report);
            }
            ExitCode::SUCCESS
        }
        Err(e) => exit_with(&format!("agelab {command}"), &e),
    }
}

/// Parses the command line; a malformed one is reported as one line naming the option (clap's
/// own help and version output, and help for a missing subcommand, stay as clap prints them).
fn parse() -> Result<Cli, ExitCode> {
    use clap::error::ErrorKind;
    Cli::try_parse().map_err(|e| match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid command line");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("agelab: {first} (see agelab --help)");
            ExitClass::BadInput.into()
        }
    })
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if !matches!(cli.command, Command::Cleanup) {
        // Every command first undoes what killed agelab processes left behind.
        agelab_mglru::journal::reconcile_at_start("agelab");
    }
    match cli.command {
        Command::Cleanup => match cli::cleanup::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => exit_with("agelab cleanup", &e),
        },
        Command::Run(args) => finish("run", cli::run::run(&args), args.json, cli::run::print_text),
        Command::Reclaim(args) => finish(
            "reclaim",
            cli::reclaim::run(&args),
            args.json,
            cli::reclaim::print_text,
        ),
        Command::Bench(args) => agelab::benchmarks::run(&args),
        Command::HostProfile { json } => {
            let profile = agelab_vmm::HostProfile::measure();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&profile).expect("profile serialises")
                );
            } else {
                println!("{profile}");
            }
            if profile.error.is_some() {
                ExitClass::Failure.into()
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Workloads => {
            cli::workloads::print();
            ExitCode::SUCCESS
        }
        Command::Lab(command) => {
            match agelab_lab::run_command(&command, &agelab::report::lab::merged_html) {
                Ok(code) => exit_code_of_status(code),
                Err(e) => exit_with("agelab lab", &e),
            }
        }
        Command::Mutants(args) => match agelab_lab::mutants::run(&args) {
            Ok(code) => exit_code_of_status(code),
            Err(e) => exit_with("agelab mutants", &e),
        },
        Command::Ab(args) => finish("ab", agelab_lab::ab::run(&args), args.json, |r| {
            print!("{}", agelab_lab::ab::report::render(r))
        }),
    }
}
