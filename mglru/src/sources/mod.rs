//! Access sources that need no kernel interface: the ground-truth oracle for validation runs and
//! a scripted source for tests. Kernel-backed sources live in [`crate::kernel`].

pub mod oracle;
pub mod scripted;

pub use oracle::OracleSource;
pub use scripted::{ScriptStep, ScriptedSource};
