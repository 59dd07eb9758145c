//! The lab: boots Debian (or custom-built) kernels under QEMU and runs agelab binaries inside them.

use clap::Args;

/// Errors of the lab runner.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Placeholder until the lab lands.
    #[error("the lab is not implemented yet")]
    NotImplemented,
}

/// `agelab lab` options.
#[derive(Debug, Args)]
pub struct LabArgs {
    /// Kernel to boot: debian-6.1, debian-6.12, debian-7.2, custom-7.2.
    #[arg(long, default_value = "debian-7.2")]
    pub kernel: String,
    /// Command (and its arguments) to run inside the lab guest.
    #[arg(last = true)]
    pub cmd: Vec<String>,
}

/// Runs `args.cmd` in the lab; returns the command's exit code.
pub fn run(_args: &LabArgs) -> Result<i32, LabError> {
    Err(LabError::NotImplemented)
}
