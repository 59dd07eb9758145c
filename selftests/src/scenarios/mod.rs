//! Scenarios shared by cargo integration tests and kselftest-style binaries.

pub mod foundation;
pub mod host_state;
pub mod kernel_interfaces;
