//! CPU time of threads and processes, for the cost of aging and reclaim.

/// CPU time of the calling thread now, ns (0 if the clock cannot be read).
pub fn thread_cpu_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// CPU time (utime + stime) of thread or process `pid` from `/proc/<pid>/stat`, ns.
pub fn proc_cpu_ns(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = stat_cpu_ticks(&text)?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100)
        .max(1) as u64;
    Some(ticks * 1_000_000_000 / hz)
}

/// CPU time (utime + stime) in clock ticks from the text of a `/proc/<pid>/stat` file.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command (field 2) may hold spaces and parentheses: fields are counted after its last
    // `)`, where state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_grows_with_work() {
        let t0 = thread_cpu_ns();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(thread_cpu_ns() > t0, "{x}");
        assert!(proc_cpu_ns(std::process::id() as i32).is_some());
        assert_eq!(proc_cpu_ns(-1), None);
    }

    #[test]
    fn ticks_are_counted_after_an_odd_command() {
        let stat = "77 (a) b (c) S 1 77 77 0 -1 4194560 10 0 0 0 120 30 0 0 20 0 1 0 500";
        assert_eq!(stat_cpu_ticks(stat), Some(150));
        assert_eq!(stat_cpu_ticks("77 (kswapd0) S 1"), None);
    }
}
