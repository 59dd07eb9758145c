//! The command line's size and duration parsers live in `agelab_mglru::units` (shared with the
//! selftest binaries and the lab); re-exported here for the CLI.

pub use agelab_mglru::units::{parse_duration, parse_size};
