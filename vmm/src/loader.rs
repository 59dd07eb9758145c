//! Selftest-style guest code loading: the loadable segments of the process's own executable, its
//! shared libraries and the vDSO are copied into the guest at their host virtual addresses.
//!
//! Guest functions are ordinary functions of this binary (and of the libraries it maps, such as
//! libc's `memcpy`), so a vCPU can start at `some_fn as usize`, call into `core::fmt`, and the
//! host can replay the same code for ground truth. Only non-writable mappings are copied: guest
//! code must not write host statics: writable data of the binary and its libraries (with their
//! `.bss`) is copied as a snapshot taken at VM creation, because libc's string functions read
//! tuning variables from there.

/// One host mapping to mirror into the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeRegion {
    /// Host (and guest) virtual start, page aligned.
    pub start: u64,
    /// Length in bytes, page aligned.
    pub len: u64,
    /// Whether the mapping is executable.
    pub exec: bool,
    /// Whether the host mapping is writable (copied as a snapshot).
    pub writable: bool,
    /// The object the region belongs to (its path, or the vDSO's `linux-vdso.so.1`), for
    /// diagnostics.
    pub name: String,
}

/// Errors while listing the process's loaded objects.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// No loaded object's segments hold this function: the dynamic linker's list is not the
    /// process's code.
    #[error("no loadable segment reported by dl_iterate_phdr holds the running code at {0:#x}")]
    OwnCodeMissing(u64),
}

/// One `PT_LOAD` segment of a loaded object, at its run-time address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Run-time start (load bias + `p_vaddr`), not page aligned.
    pub start: u64,
    /// `p_memsz`: file contents plus the zero-filled `.bss` after them.
    pub mem_bytes: u64,
    /// `p_flags` (`PF_X`, `PF_W`, `PF_R`).
    pub flags: u32,
    /// The object's path (the executable's own for the main program, whose name the dynamic
    /// linker leaves empty).
    pub object: String,
}

/// The regions to copy for the running process: every `PT_LOAD` segment of the executable, its
/// shared libraries and the vDSO, as the dynamic linker lists them (`dl_iterate_phdr`), `.bss`
/// included (`p_memsz`).
///
/// Reading `/proc/self/maps` instead would race with every other thread of the process: an
/// anonymous mapping that happens to sit right after a library without a `.bss` of its own (a
/// thread's signal stack, another VM's memory) looks like that library's `.bss`, and is copied
/// while its owner may unmap it.
pub fn code_regions() -> Result<Vec<CodeRegion>, LoaderError> {
    let regions = regions_of_segments(&loaded_segments());
    let here = code_regions as *const () as usize as u64;
    if !regions
        .iter()
        .any(|c| c.exec && (c.start..c.start + c.len).contains(&here))
    {
        return Err(LoaderError::OwnCodeMissing(here));
    }
    Ok(regions)
}

/// Every `PT_LOAD` segment of every loaded object, in the dynamic linker's order.
pub fn loaded_segments() -> Vec<Segment> {
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid `info` for the duration of the call, and `data`
        // is the `Vec` `loaded_segments` handed it, not otherwise borrowed meanwhile.
        let (info, out) = unsafe { (&*info, &mut *data.cast::<Vec<Segment>>()) };
        let object = if info.dlpi_name.is_null() {
            String::new()
        } else {
            // SAFETY: a non-null `dlpi_name` is a NUL-terminated string owned by the linker.
            unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }
                .to_string_lossy()
                .into_owned()
        };
        let object = if object.is_empty() {
            std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "the executable".into())
        } else {
            object
        };
        let phdrs: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
            &[]
        } else {
            // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers of a loaded object,
            // which stay mapped while it is loaded (nothing here unloads objects).
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
        };
        for ph in phdrs.iter().filter(|ph| ph.p_type == libc::PT_LOAD) {
            out.push(Segment {
                start: info.dlpi_addr.wrapping_add(ph.p_vaddr),
                mem_bytes: ph.p_memsz,
                flags: ph.p_flags,
                object: object.clone(),
            });
        }
        0
    }
    let mut out: Vec<Segment> = Vec::new();
    // SAFETY: `each` only reads the linker's records and pushes to `out`, which outlives the
    // call.
    unsafe { libc::dl_iterate_phdr(Some(each), (&raw mut out).cast()) };
    out
}

/// Page-aligned regions covering `segments` (rounded out to whole pages; segments sharing a page
/// are merged, their flags combined), sorted by address; empty segments and any in the upper
/// half of the address space are left out.
pub fn regions_of_segments(segments: &[Segment]) -> Vec<CodeRegion> {
    let page = PAGE_SIZE;
    let mut regions: Vec<CodeRegion> = segments
        .iter()
        .filter(|s| s.mem_bytes > 0)
        .filter_map(|s| {
            let start = s.start / page * page;
            let end = s
                .start
                .checked_add(s.mem_bytes)?
                .checked_next_multiple_of(page)?;
            (end <= LOWER_HALF_END).then(|| CodeRegion {
                start,
                len: end - start,
                exec: s.flags & libc::PF_X != 0,
                writable: s.flags & libc::PF_W != 0,
                name: s.object.clone(),
            })
        })
        .collect();
    regions.sort_by_key(|c| c.start);
    let mut out: Vec<CodeRegion> = Vec::with_capacity(regions.len());
    for r in regions {
        match out.last_mut() {
            Some(prev) if r.start < prev.start + prev.len => {
                let end = (prev.start + prev.len).max(r.start + r.len);
                prev.len = end - prev.start;
                prev.exec |= r.exec;
                prev.writable |= r.writable;
                if prev.name != r.name {
                    prev.name = format!("{} + {}", prev.name, r.name);
                }
            }
            _ => out.push(r),
        }
    }
    out
}

/// Page size of the copies (the guest maps code with 4 KiB pages).
const PAGE_SIZE: u64 = 4096;
/// End of the lower half of a 48-bit address space: user mappings live below it.
const LOWER_HALF_END: u64 = 0x0000_8000_0000_0000;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg(start: u64, mem_bytes: u64, flags: u32, object: &str) -> Segment {
        Segment {
            start,
            mem_bytes,
            flags,
            object: object.into(),
        }
    }

    #[test]
    fn segments_round_out_to_pages_and_bss_is_included() {
        let r = regions_of_segments(&[
            seg(0x40_0000, 0x1234, libc::PF_R, "/bin/a"),
            seg(0x40_2000, 0x3000, libc::PF_R | libc::PF_X, "/bin/a"),
            // .data + .bss: 0x100 bytes from the file, p_memsz to 0x4_0010 past it.
            seg(
                0x40_5e00,
                0x4_0010 - 0x5e00 + 0x100,
                libc::PF_R | libc::PF_W,
                "/bin/a",
            ),
        ]);
        let got: Vec<_> = r
            .iter()
            .map(|c| (c.start, c.len, c.exec, c.writable))
            .collect();
        assert_eq!(
            got,
            vec![
                (0x40_0000, 0x2000, false, false),
                (0x40_2000, 0x3000, true, false),
                (0x40_5000, 0x3_c000, false, true),
            ]
        );
    }

    #[test]
    fn segments_sharing_a_page_merge() {
        let r = regions_of_segments(&[
            seg(0x1000, 0x800, libc::PF_R | libc::PF_X, "/lib/x.so"),
            seg(0x1800, 0x1000, libc::PF_R | libc::PF_W, "/lib/x.so"),
            seg(0x0, 0, libc::PF_R, "/lib/empty.so"),
            seg(0xffff_ffff_ff60_0000, 0x1000, libc::PF_X, "[vsyscall]"),
        ]);
        assert_eq!(
            r,
            vec![CodeRegion {
                start: 0x1000,
                len: 0x2000,
                exec: true,
                writable: true,
                name: "/lib/x.so".into(),
            }]
        );
    }

    proptest! {
        /// Regions are page aligned, sorted, disjoint, and cover every byte of every segment.
        #[test]
        fn regions_cover_every_segment(
            segs in proptest::collection::vec((0u64..1 << 30, 0u64..1 << 20, 0u32..8), 0..24)
        ) {
            let segs: Vec<Segment> = segs
                .into_iter()
                .map(|(start, len, flags)| seg(start, len, flags, "/o"))
                .collect();
            let r = regions_of_segments(&segs);
            for w in r.windows(2) {
                prop_assert!(w[0].start + w[0].len <= w[1].start);
            }
            for c in &r {
                prop_assert_eq!(c.start % PAGE_SIZE, 0);
                prop_assert_eq!(c.len % PAGE_SIZE, 0);
                prop_assert!(c.len > 0);
            }
            for s in segs.iter().filter(|s| s.mem_bytes > 0) {
                let holder = r
                    .iter()
                    .find(|c| c.start <= s.start && s.start + s.mem_bytes <= c.start + c.len);
                prop_assert!(holder.is_some(), "{:?} not covered by {:?}", s, r);
                let holder = holder.unwrap();
                prop_assert!(holder.exec || s.flags & libc::PF_X == 0);
                prop_assert!(holder.writable || s.flags & libc::PF_W == 0);
            }
        }
    }

    #[test]
    fn live_process_has_its_own_text_and_libc_data() {
        let here = live_process_has_its_own_text_and_libc_data as *const () as usize as u64;
        let r = code_regions().unwrap();
        assert!(r
            .iter()
            .any(|c| c.exec && here >= c.start && here < c.start + c.len));
        // libc's `environ` (its data, or the executable's copy of it) is copied writable data.
        let env_at = (&raw const environ) as u64;
        assert!(
            r.iter()
                .any(|c| c.writable && env_at >= c.start && env_at < c.start + c.len),
            "environ at {env_at:#x} is in no writable region: {r:#?}"
        );
        assert!(r.iter().any(|c| c.name.contains("libc.so")), "{r:#?}");
    }

    unsafe extern "C" {
        static environ: *const *const libc::c_char;
    }

    /// An anonymous mapping the process makes right after a library's last writable segment (a
    /// thread's signal stack, an allocator's arena, another VM's memory) is not that library's.
    #[test]
    fn an_anonymous_neighbour_of_a_library_is_not_code() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let ranges: Vec<(u64, u64, String, String)> = maps
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let (a, b) = f[0].split_once('-').unwrap();
                (
                    u64::from_str_radix(a, 16).unwrap(),
                    u64::from_str_radix(b, 16).unwrap(),
                    f[1].to_string(),
                    f.get(5).unwrap_or(&"").to_string(),
                )
            })
            .collect();
        // A writable library mapping with a free page after it.
        let spot = ranges.windows(2).find_map(|w| {
            (w[0].2.starts_with("rw") && w[0].3.contains(".so") && w[1].0 > w[0].1)
                .then_some(w[0].1)
        });
        let spot = spot.expect("a writable library mapping followed by a gap");
        // SAFETY: MAP_FIXED_NOREPLACE only maps where nothing is mapped.
        let p = unsafe {
            libc::mmap(
                spot as *mut libc::c_void,
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        assert_eq!(p as u64, spot);
        let r = code_regions().unwrap();
        // SAFETY: our own mapping.
        unsafe { libc::munmap(p, 4096) };
        for c in &r {
            assert!(
                c.start + c.len <= spot || c.start >= spot + 4096,
                "{c:?} covers the anonymous page at {spot:#x}"
            );
        }
    }
}
