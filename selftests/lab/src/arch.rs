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
    /// Machine arguments (the CPU and accelerator come from `--accel`, see [`super::accel`]).
    pub qemu_machine: &'static [&'static str],
    /// `-cpu` under TCG.
    pub tcg_cpu: &'static str,
    /// `-accel` for plain TCG.
    pub tcg_accel: &'static str,
    /// The kernel console device (carries only kernel and init messages).
    pub console: &'static str,
    /// Guest devices of the command's stdout, stderr and the status channel, in QEMU's
    /// `-serial` order after the console.
    pub channels: [&'static str; 3],
    /// QEMU device for the three channels when the machine has a single UART (`-device
    /// DEV,chardev=..`); `None`: the channels are further `-serial` ports.
    pub channel_device: Option<&'static str>,
    /// Script (relative to the workspace) that cross-builds the static binaries into
    /// `target/<rust_target>/release` when the host toolchain cannot (`None`: plain cargo).
    pub cross_build: Option<&'static str>,
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
pub const ARCHES: &[ArchSpec] = &[
    ArchSpec {
        name: "x86_64",
        deb_arch: "amd64",
        kernel_flavour: "amd64",
        rust_target: "x86_64-unknown-linux-gnu",
        elf_machine: 62,
        qemu: "qemu-system-x86_64",
        // The host's /dev/kvm is paravirtual (kvm_pvm) and cannot run QEMU's KVM accelerator;
        // TCG's `max` CPU exposes SVM with NPT, so the guest kernel's KVM works (nested).
        // Single-threaded TCG: with one host thread per vCPU (MTTCG), Debian 7.2 guests crash now
        // and then in code the kernel is live-patching (static keys flipped by `lru_gen/enabled`:
        // "Fatal exception in interrupt" at a half-written jump). Round-robin vCPUs cost little on
        // this 2-core host and make the lab deterministic about it.
        qemu_machine: &["-M", "q35"],
        tcg_cpu: "max",
        tcg_accel: "tcg,thread=single",
        console: "ttyS0",
        channels: ["ttyS1", "ttyS2", "ttyS3"],
        channel_device: None,
        cross_build: None,
        // no_timer_check: on a busy host TCG is too slow for the IO-APIC timer check, and the
        // kernel panics "IO-APIC + timer doesn't work!" (seen at load average 11).
        cmdline: "8250.nr_uarts=4 no_timer_check",
        kbuild_arch: "x86_64",
        kbuild_image: "arch/x86/boot/bzImage",
        kbuild_target: "bzImage",
        custom_config: include_str!("../custom-x86_64.config"),
        kvm_modules: &[("svm", "kvm_amd"), ("vmx", "kvm_intel")],
    },
    ArchSpec {
        name: "aarch64",
        deb_arch: "arm64",
        kernel_flavour: "arm64",
        rust_target: "aarch64-unknown-linux-gnu",
        elf_machine: 183,
        qemu: "qemu-system-aarch64",
        // virtualization=on gives the guest kernel EL2, so its KVM runs (nested, under TCG);
        // pauth-impdef: TCG's architected pointer-auth cipher is slow to emulate.
        qemu_machine: &["-M", "virt,virtualization=on"],
        tcg_cpu: "max,pauth-impdef=on",
        tcg_accel: "tcg",
        console: "ttyAMA0",
        // virt has one PL011 (the console): the channels are PCI 16550s, ttyS0..ttyS2.
        channels: ["ttyS0", "ttyS1", "ttyS2"],
        channel_device: Some("pci-serial"),
        // No aarch64 std for the host toolchain: sid's rustc in a chroot builds the binaries.
        cross_build: Some("selftests/arm64/cross.sh"),
        cmdline: "8250.nr_uarts=4",
        kbuild_arch: "arm64",
        kbuild_image: "arch/arm64/boot/Image",
        kbuild_target: "Image",
        // No custom arm64 kernel yet (Debian's kernels have KVM built in).
        custom_config: "",
        kvm_modules: &[],
    },
];

/// The spec of `name` (Rust's or Debian's spelling: `aarch64` or `arm64`), if the lab supports it.
pub fn find_arch(name: &str) -> Option<&'static ArchSpec> {
    ARCHES.iter().find(|a| a.name == name || a.deb_arch == name)
}
