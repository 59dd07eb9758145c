//! Everything that differs between guest architectures, in one table keyed by `--arch`.

/// How one guest architecture is booted and what it runs.
#[derive(Debug)]
pub struct ArchSpec {
    /// The `--arch` name (Rust's `target_arch` spelling).
    pub name: &'static str,
    /// Debian's architecture name.
    pub deb_arch: &'static str,
    /// Debian kernel flavour (`linux-image-<flavour>` metapackage).
    pub kernel_flavour: &'static str,
    /// Rust target triple for the static project binaries.
    pub rust_target: &'static str,
    /// ELF `e_machine` of binaries that run in this guest.
    pub elf_machine: u16,
    /// The QEMU system emulator.
    pub qemu: &'static str,
    /// Machine, CPU and accelerator arguments.
    pub qemu_machine: &'static [&'static str],
    /// The kernel console device (carries only kernel and init messages).
    pub console: &'static str,
    /// Guest devices of the command's stdout, stderr and the status channel, in QEMU's
    /// `-serial` order after the console.
    pub channels: [&'static str; 3],
    /// Extra kernel command-line words.
    pub cmdline: &'static str,
    /// `ARCH=` for the kernel build and the image it produces, relative to the tree.
    pub kbuild_arch: &'static str,
    /// The kernel image the custom build produces, relative to the build tree.
    pub kbuild_image: &'static str,
    /// `make` target of the kernel image.
    pub kbuild_target: &'static str,
    /// Kconfig fragment of the custom kernel, merged on top of `tinyconfig`.
    pub custom_config: &'static str,
    /// Modules that provide /dev/kvm, with the `/proc/cpuinfo` flag that selects each.
    pub kvm_modules: &'static [(&'static str, &'static str)],
}

/// The architectures the lab knows.
pub const ARCHES: &[ArchSpec] = &[ArchSpec {
    name: "x86_64",
    deb_arch: "amd64",
    kernel_flavour: "amd64",
    rust_target: "x86_64-unknown-linux-gnu",
    elf_machine: 62,
    qemu: "qemu-system-x86_64",
    // The host's /dev/kvm is paravirtual (kvm_pvm) and cannot run QEMU's KVM accelerator;
    // TCG's `max` CPU exposes SVM with NPT, so the guest kernel's KVM works (nested).
    qemu_machine: &["-M", "q35", "-cpu", "max", "-accel", "tcg"],
    console: "ttyS0",
    channels: ["ttyS1", "ttyS2", "ttyS3"],
    cmdline: "8250.nr_uarts=4",
    kbuild_arch: "x86_64",
    kbuild_image: "arch/x86/boot/bzImage",
    kbuild_target: "bzImage",
    custom_config: include_str!("../../lab/custom-x86_64.config"),
    kvm_modules: &[("svm", "kvm_amd"), ("vmx", "kvm_intel")],
}];

/// The spec of `name`, if the lab supports it.
pub fn find_arch(name: &str) -> Option<&'static ArchSpec> {
    ARCHES.iter().find(|a| a.name == name)
}
