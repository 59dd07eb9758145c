//! Selftest-style guest code loading: the process's own executable and read-only mappings are
//! copied into the guest at their host virtual addresses.
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
    /// The mapping's name (file path or `[vdso]`), for diagnostics.
    pub name: String,
}

/// Errors while reading the process's mappings.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// /proc/self/maps could not be read.
    #[error("reading /proc/self/maps: {0}")]
    Maps(#[source] std::io::Error),
    /// A line had an unexpected shape.
    #[error("unexpected /proc/self/maps line: {0}")]
    BadLine(String),
}

/// Parses `/proc/self/maps` text into the regions to copy: every readable mapping of a file or
/// the vDSO in the lower half of the address space, plus the anonymous mapping that directly
/// follows a writable file mapping (the `.bss` of that object, named `<file> [bss]`).
pub fn code_regions_from_maps(maps: &str) -> Result<Vec<CodeRegion>, LoaderError> {
    let mut out: Vec<CodeRegion> = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let name = f.nth(3).unwrap_or("").to_string();
        let (a, b) = range
            .split_once('-')
            .ok_or_else(|| LoaderError::BadLine(line.to_string()))?;
        let parse = |s: &str| {
            u64::from_str_radix(s, 16).map_err(|_| LoaderError::BadLine(line.to_string()))
        };
        let (start, end) = (parse(a)?, parse(b)?);
        let p = perms.as_bytes();
        if p.len() < 3 || p[0] != b'r' || start >= 0x0000_8000_0000_0000 {
            continue;
        }
        let writable = p[1] == b'w';
        let name = if name.starts_with('/') || name == "[vdso]" {
            name
        } else if name.is_empty() && writable {
            match out.last() {
                Some(prev)
                    if prev.writable
                        && prev.start + prev.len == start
                        && !prev.name.ends_with("[bss]") =>
                {
                    format!("{} [bss]", prev.name)
                }
                _ => continue,
            }
        } else {
            continue;
        };
        out.push(CodeRegion {
            start,
            len: end - start,
            exec: p[2] == b'x',
            writable,
            name,
        });
    }
    Ok(out)
}

/// The object a region belongs to (its file path, without a `[bss]` suffix).
pub fn object_of(region: &CodeRegion) -> &str {
    region.name.strip_suffix(" [bss]").unwrap_or(&region.name)
}

/// The regions to copy for the running process: the executable, its shared libraries and the
/// vDSO (not data files a library may have mapped).
pub fn code_regions() -> Result<Vec<CodeRegion>, LoaderError> {
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(LoaderError::Maps)?;
    let exe = std::env::current_exe().ok();
    Ok(code_regions_from_maps(&maps)?
        .into_iter()
        .filter(|c| {
            let obj = object_of(c);
            obj == "[vdso]"
                || obj.contains(".so")
                || exe
                    .as_ref()
                    .is_some_and(|e| std::path::Path::new(obj) == e.as_path())
                || obj.ends_with(" (deleted)")
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c8a00000-55d0c8a40000 r--p 00000000 fe:01 123 /usr/bin/agelab
55d0c8a40000-55d0c8b00000 r-xp 00040000 fe:01 123 /usr/bin/agelab
55d0c8b00000-55d0c8b10000 rw-p 00100000 fe:01 123 /usr/bin/agelab
55d0c9000000-55d0c9100000 rw-p 00000000 00:00 0 [heap]
7f1234500000-7f1234600000 r-xp 00000000 fe:01 9 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1234600000-7f1234610000 rw-p 00100000 fe:01 9 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1234610000-7f1234620000 rw-p 00000000 00:00 0
7f1234620000-7f1234630000 rw-p 00000000 00:00 0
7ffd0f00000-7ffd0f01000 rw-p 00000000 00:00 0
7ffd1000000-7ffd1002000 r-xp 00000000 00:00 0 [vdso]
7ffd1002000-7ffd1004000 r--p 00000000 00:00 0 [vvar]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]
";

    #[test]
    fn keeps_readonly_file_and_vdso_mappings() {
        let r = code_regions_from_maps(MAPS).unwrap();
        let names: Vec<_> = r.iter().map(|c| (c.start, c.exec, c.writable)).collect();
        assert_eq!(
            names,
            vec![
                (0x55d0c8a00000, false, false),
                (0x55d0c8a40000, true, false),
                (0x55d0c8b00000, false, true),
                (0x7f1234500000, true, false),
                (0x7f1234600000, false, true),
                (0x7f1234610000, false, true),
                (0x7ffd1000000, true, false)
            ]
        );
        assert_eq!(r[5].name, "/usr/lib/x86_64-linux-gnu/libc.so.6 [bss]");
    }

    #[test]
    fn live_process_has_its_own_text() {
        let here = live_process_has_its_own_text as *const () as usize as u64;
        let r = code_regions().unwrap();
        assert!(r
            .iter()
            .any(|c| c.exec && here >= c.start && here < c.start + c.len));
    }
}
