//! `agelab`: run guests under KVM while a userspace MGLRU ages their memory.

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
    /// Boot QEMU with a lab kernel and run a command inside it.
    Lab(agelab::lab::LabArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Lab(args) => match agelab::lab::run(&args) {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => {
                eprintln!("agelab lab: {e}");
                ExitCode::from(1)
            }
        },
    }
}
