//! aarch64: the same public names as `x86_64`, for guest code at EL0.
//!
//! Status: not yet implemented. This machine has no aarch64 Rust standard library, so this module
//! cannot be compiled or tested here; building agelab for aarch64 stops at the error below rather
//! than producing a VMM that pretends to work. See README ("arm64").

compile_error!("agelab's aarch64 VMM support is not implemented yet (see README, arm64)");
