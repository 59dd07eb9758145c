//! A writer for `newc` cpio archives, the format the kernel unpacks as an initramfs.
//!
//! Written here rather than with `cpio(1)` so that device nodes (`/dev/console`) can be added
//! without root and so that archives are byte-for-byte reproducible (fixed mtimes and owners).

use std::io::{self, Write};

/// File type and permission bits of a cpio entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link; the data is the target.
    Symlink,
    /// A character device with the given major and minor numbers.
    CharDev(u32, u32),
}

/// Streams entries into a newc archive; call [`CpioWriter::finish`] to write the trailer.
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    out: W,
    offset: u64,
    next_ino: u32,
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

impl<W: Write> CpioWriter<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            offset: 0,
            next_ino: 1,
        }
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        self.entry(path, EntryKind::Dir, perm, &[])
    }

    /// Adds a regular file with `data`.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, EntryKind::File, perm, data)
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(path, EntryKind::Symlink, 0o777, target.as_bytes())
    }

    /// Adds one entry. `path` is relative to the archive root (a leading `/` is dropped).
    pub fn entry(&mut self, path: &str, kind: EntryKind, perm: u32, data: &[u8]) -> io::Result<()> {
        let name = path.trim_start_matches('/');
        let (mode, nlink, rdev) = match kind {
            EntryKind::Dir => (S_IFDIR, 2, (0, 0)),
            EntryKind::File => (S_IFREG, 1, (0, 0)),
            EntryKind::Symlink => (S_IFLNK, 1, (0, 0)),
            EntryKind::CharDev(ma, mi) => (S_IFCHR, 1, (ma, mi)),
        };
        let filesize = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: larger than 4 GiB"),
            )
        })?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(name, ino, mode | (perm & 0o7777), nlink, filesize, rdev)?;
        self.write_padded(data)
    }

    /// Writes the `TRAILER!!!` entry and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header("TRAILER!!!", 0, 0, 1, 0, (0, 0))?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        filesize: u32,
        rdev: (u32, u32),
    ) -> io::Result<()> {
        let namesize = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path too long"))?;
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
        // rdevmajor, rdevminor, namesize, check: 8 hex digits each.
        let fields = [
            ino, mode, 0, 0, nlink, 0, filesize, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        let mut hdr = String::with_capacity(110);
        hdr.push_str("070701");
        for f in fields {
            hdr.push_str(&format!("{f:08x}"));
        }
        let mut bytes = hdr.into_bytes();
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        self.write_padded(&bytes)
    }

    fn write_padded(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)?;
        self.offset += data.len() as u64;
        let pad = (4 - (self.offset % 4)) % 4;
        self.out.write_all(&[0u8; 3][..pad as usize])?;
        self.offset += pad;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimal newc reader for the round-trip test: (name, mode, rdevmajor, rdevminor, data).
    fn read_all(mut buf: &[u8]) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let start_len = buf.len();
        loop {
            assert_eq!(&buf[..6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(
                    std::str::from_utf8(&buf[6 + 8 * i..14 + 8 * i]).unwrap(),
                    16,
                )
                .unwrap()
            };
            let (mode, size, rma, rmi, namesize) =
                (field(1), field(6), field(9), field(10), field(11));
            let name_end = 110 + namesize as usize;
            let name = std::str::from_utf8(&buf[110..name_end - 1])
                .unwrap()
                .to_string();
            assert_eq!(buf[name_end - 1], 0);
            let pad4 = |pos: usize| (pos + 3) & !3;
            let consumed = start_len - buf.len();
            let data_start = pad4(consumed + name_end) - consumed;
            let data = buf[data_start..data_start + size as usize].to_vec();
            let next = pad4(consumed + data_start + size as usize) - consumed;
            buf = &buf[next..];
            if name == "TRAILER!!!" {
                assert!(buf.is_empty());
                return out;
            }
            out.push((name, mode, rma, rmi, data));
        }
    }

    #[test]
    fn round_trip() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("/dev", 0o755).unwrap();
        w.entry("/dev/console", EntryKind::CharDev(5, 1), 0o600, &[])
            .unwrap();
        w.file("init", 0o755, b"#!/bin/sh\n").unwrap();
        w.file("/odd", 0o644, b"12345").unwrap();
        w.symlink("/bin/sh", "busybox").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let entries = read_all(&bytes);
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["dev", "dev/console", "init", "odd", "bin/sh"]);
        assert_eq!(entries[0].1, 0o040_755);
        assert_eq!(
            (entries[1].1, entries[1].2, entries[1].3),
            (0o020_600, 5, 1)
        );
        assert_eq!(entries[2].4, b"#!/bin/sh\n");
        assert_eq!(entries[3].4, b"12345");
        assert_eq!(
            (entries[4].1, entries[4].4.as_slice()),
            (0o120_777, &b"busybox"[..])
        );
    }

    #[test]
    fn cpio_tool_accepts_the_archive() {
        let Ok(true) = std::process::Command::new("cpio")
            .arg("--version")
            .output()
            .map(|o| o.status.success())
        else {
            println!("SKIP: cpio(1) not installed");
            return;
        };
        let mut w = CpioWriter::new(Vec::new());
        w.file("a/b.txt", 0o644, b"hello").unwrap();
        w.dir("a", 0o755).unwrap();
        let bytes = w.finish().unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a/b.txt\na\n");
    }
}
