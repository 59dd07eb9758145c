//! Unit tests of the lab's option parsers: sizes, durations and kernel lists.

use super::*;

#[test]
fn sizes() {
    assert!(check_size("m", "2G").is_ok());
    assert!(check_size("m", "512M").is_ok());
    assert!(check_size("m", "4096").is_ok());
    assert!(check_size("m", "G").is_err());
    assert!(check_size("m", "1GG").is_err());
    assert!(check_size("m", "1;reboot").is_err());
}

// 1024 cases: any short string gives a size or a usage error, never a panic (durations:
// `agelab_util::units`).
proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]
    #[test]
    fn lab_sizes_never_panic(s in "[0-9]{0,400}(\\.[0-9]{0,3})?(ms|s|m|min|h|x)?|\\PC{0,16}") {
        let _ = check_size("--mem", &s);
    }
}

#[test]
fn kernel_lists() {
    assert_eq!(
        kernel_list("debian-6.1, debian-7.2"),
        ["debian-6.1", "debian-7.2"]
    );
    assert_eq!(kernel_list("all").len(), kernel::KERNELS.len());
}
