//! Utilities shared by the engine, the command line, the selftests and the lab, with no
//! dependency on the VMM or the aging engine: small-sample statistics, size and duration
//! parsers, progress output on stderr and CPU time of threads and processes.

pub mod cpu_time;
pub mod exit;
pub mod progress;
pub mod stats;
pub mod units;
