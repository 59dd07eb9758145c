//! Boots each Debian lab kernel under QEMU and checks what the lab promises inside:
//! lru_gen is present (and enabled by init) and /dev/kvm exists (nested SVM under TCG).
//! Needs qemu-system-x86_64 and network access to the host's Debian mirror on first run.

mod lab_support;

use lab_support::{lab, skip, stdout};

fn check_kernel(kernel: &str, series: &str) {
    if skip() {
        return;
    }
    let out = lab(&[
        "--kernel",
        kernel,
        "--",
        "sh",
        "-c",
        "uname -r; cat /sys/kernel/mm/lru_gen/enabled; test -c /dev/kvm && echo kvm-present",
    ]);
    assert_eq!(out.status.code(), Some(0), "{kernel}: lab run failed");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines
            .first()
            .is_some_and(|r| r.starts_with(&format!("{series}."))),
        "{kernel}: expected a {series}.x kernel, uname -r said {:?}",
        lines.first()
    );
    let caps = lines.get(1).copied().unwrap_or_default();
    let caps = u32::from_str_radix(caps.trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("{kernel}: lru_gen/enabled read {caps:?}"));
    assert_eq!(
        caps & 0x7,
        0x7,
        "{kernel}: lru_gen not fully enabled: {caps:#06x}"
    );
    assert_eq!(lines.get(2), Some(&"kvm-present"), "{kernel}: no /dev/kvm");
}

#[test]
fn debian_6_1_has_lru_gen_and_kvm() {
    check_kernel("debian-6.1", "6.1");
}

#[test]
fn debian_6_12_has_lru_gen_and_kvm() {
    check_kernel("debian-6.12", "6.12");
}

#[test]
fn debian_7_2_has_lru_gen_and_kvm() {
    check_kernel("debian-7.2", "7.2");
}
