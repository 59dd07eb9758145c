//! KVM binary statistics (KVM_GET_STATS_FD) for the VM and each vCPU, as name → value.

use crate::kvm_raw;
use kvm_bindings::{kvm_stats_desc, kvm_stats_header};
use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, OwnedFd};

/// Errors reading binary stats.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// KVM_GET_STATS_FD failed (kernel older than 5.14, or stats disabled).
    #[error("KVM_GET_STATS_FD: {0}")]
    Open(#[source] kvm_ioctls::Error),
    /// Reading the stats fd failed.
    #[error("reading KVM stats: {0}")]
    Read(#[source] std::io::Error),
    /// The header or descriptors are malformed.
    #[error("malformed KVM stats data: {0}")]
    Malformed(String),
}

#[derive(Debug, Clone)]
struct Desc {
    name: String,
    size: u16,
    offset: u32,
}

/// An open stats fd with its descriptors parsed once.
#[derive(Debug)]
pub struct KvmStats {
    fd: OwnedFd,
    id: String,
    descs: Vec<Desc>,
    data_offset: u64,
}

fn pread_exact(fd: &OwnedFd, buf: &mut [u8], off: u64) -> Result<(), StatsError> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: reading into the unfilled tail of `buf`, which is valid for that many bytes.
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf[done..].as_mut_ptr().cast(),
                buf.len() - done,
                (off + done as u64) as libc::off_t,
            )
        };
        if n < 0 {
            return Err(StatsError::Read(std::io::Error::last_os_error()));
        }
        if n == 0 {
            return Err(StatsError::Malformed("short read".into()));
        }
        done += n as usize;
    }
    Ok(())
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

impl KvmStats {
    /// Opens the stats of a VM or vCPU fd.
    pub fn open(fd: &impl AsRawFd) -> Result<Self, StatsError> {
        let fd = kvm_raw::stats_fd(fd).map_err(StatsError::Open)?;
        let mut hdr = [0u8; size_of::<kvm_stats_header>()];
        pread_exact(&fd, &mut hdr, 0)?;
        let (name_size, num_desc, id_off, desc_off, data_off) = (
            u32_at(&hdr, offset_of!(kvm_stats_header, name_size)),
            u32_at(&hdr, offset_of!(kvm_stats_header, num_desc)),
            u32_at(&hdr, offset_of!(kvm_stats_header, id_offset)),
            u32_at(&hdr, offset_of!(kvm_stats_header, desc_offset)),
            u32_at(&hdr, offset_of!(kvm_stats_header, data_offset)),
        );
        if name_size == 0 || name_size > 4096 || num_desc > 100_000 {
            return Err(StatsError::Malformed(format!(
                "name_size {name_size}, {num_desc} descriptors"
            )));
        }
        let mut id = vec![0u8; name_size as usize];
        pread_exact(&fd, &mut id, u64::from(id_off))?;
        // Each descriptor is the fixed part followed by its name in `name_size` bytes.
        let desc_len = size_of::<kvm_stats_desc>() + name_size as usize;
        let mut raw = vec![0u8; desc_len * num_desc as usize];
        pread_exact(&fd, &mut raw, u64::from(desc_off))?;
        let cstr = |b: &[u8]| {
            String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or(&[])).into_owned()
        };
        let descs = raw
            .chunks_exact(desc_len)
            .map(|d| {
                let size = offset_of!(kvm_stats_desc, size);
                Desc {
                    size: u16::from_ne_bytes([d[size], d[size + 1]]),
                    offset: u32_at(d, offset_of!(kvm_stats_desc, offset)),
                    name: cstr(&d[offset_of!(kvm_stats_desc, name)..]),
                }
            })
            .collect();
        Ok(KvmStats {
            fd,
            id: cstr(&id),
            descs,
            data_offset: u64::from(data_off),
        })
    }

    /// The stats id (e.g. `kvm-1234` or `kvm-1234/vcpu-0`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Reads every statistic now. Histogram stats (size > 1) are summed into one value.
    pub fn read(&self) -> Result<BTreeMap<String, u64>, StatsError> {
        let len = self
            .descs
            .iter()
            .map(|d| d.offset as usize + 8 * d.size as usize)
            .max()
            .unwrap_or(0);
        let mut data = vec![0u8; len];
        pread_exact(&self.fd, &mut data, self.data_offset)?;
        Ok(self
            .descs
            .iter()
            .map(|d| {
                let v = (0..d.size as usize)
                    .map(|i| {
                        let o = d.offset as usize + 8 * i;
                        u64::from_ne_bytes(data[o..o + 8].try_into().expect("8 bytes"))
                    })
                    .fold(0u64, u64::wrapping_add);
                (d.name.clone(), v)
            })
            .collect())
    }
}
