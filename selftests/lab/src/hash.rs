//! Content hashes for cache keys: FNV-1a, 64 bit. Not cryptographic; stable across Rust releases,
//! unlike `DefaultHasher`.

/// An incremental FNV-1a 64-bit hasher.
#[derive(Debug, Clone, Copy)]
pub struct CacheHasher(u64);

impl Default for CacheHasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl CacheHasher {
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Feeds a length-prefixed field, so that ("ab","c") and ("a","bc") differ.
    pub fn field(&mut self, bytes: &[u8]) {
        self.update(&(bytes.len() as u64).to_le_bytes());
        self.update(bytes);
    }

    /// The hash as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        let h = CacheHasher::default();
        assert_eq!(h.hex(), "cbf29ce484222325");
        let mut h = CacheHasher::default();
        h.update(b"a");
        assert_eq!(h.hex(), "af63dc4c8601ec8c");
    }

    #[test]
    fn fields_are_framed() {
        let mut a = CacheHasher::default();
        a.field(b"ab");
        a.field(b"c");
        let mut b = CacheHasher::default();
        b.field(b"a");
        b.field(b"bc");
        assert_ne!(a.hex(), b.hex());
    }
}
