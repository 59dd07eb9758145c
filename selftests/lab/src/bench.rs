//! `agelab lab --bench`: boot-to-command time per kernel and the custom kernel's build time.

use super::arch::ArchSpec;
use super::kernel::{find_kernel, KernelSource};
use super::qemu::OutputMode;
use super::{kernel_list, remove_run_dir, Lab, LabArgs, LabError, RunOptions};
use std::time::Instant;

/// Boots per kernel; the median is reported.
const BOOTS: usize = 3;

/// Runs the benchmark on every kernel of `--kernel` and prints a table.
pub fn run(args: &LabArgs, arch: &'static ArchSpec) -> Result<i32, LabError> {
    let lab = Lab::new(args, arch)?;
    let opts = RunOptions::from_args(args)?;
    let kernels = kernel_list(&args.kernel);
    println!(
        "{:12}  {:>9}  {:>15}  {:>15}  {:>12}  {:>14}",
        "kernel", "prepare_s", "to_command_s", "guest_uptime_s", "total_s", "build_cold_s"
    );
    for name in &kernels {
        let t0 = Instant::now();
        let k = lab.kernel(name)?;
        let prepare = t0.elapsed().as_secs_f64();
        let mut to_cmd = Vec::new();
        let mut uptime = Vec::new();
        let mut total = Vec::new();
        for _ in 0..BOOTS {
            let (r, dir) = lab.boot(&k, &[], &["true".to_string()], &opts, OutputMode::Capture)?;
            remove_run_dir(&dir);
            to_cmd.push(r.to_command.map_or(f64::NAN, |d| d.as_secs_f64()));
            uptime.push(r.guest_uptime_at_command.unwrap_or(f64::NAN));
            total.push(r.total.as_secs_f64());
        }
        let custom =
            find_kernel(name, arch).is_ok_and(|s| matches!(s.source, KernelSource::Custom));
        let build = match k.build_secs {
            (Some(now), _) => format!("{now:.0} (now)"),
            (None, Some(cold)) => format!("{cold:.0}"),
            _ if custom => "?".into(),
            _ => "-".into(),
        };
        println!(
            "{:12}  {:>9.2}  {:>15}  {:>15}  {:>12}  {:>14}",
            name,
            prepare,
            median(&mut to_cmd),
            median(&mut uptime),
            median(&mut total),
            build
        );
    }
    println!("(prepare = fetch/build or cache lookup; median of {BOOTS} boots running `true`)");
    Ok(0)
}

/// The median of `v` to two decimals, `-` without samples.
fn median(v: &mut [f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    format!("{:.2}", agelab_util::stats::median(v))
}
