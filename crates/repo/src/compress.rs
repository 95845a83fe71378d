//! zstd per blob, skipped when it would not pay.

/// Compressed output must be at most this share of the input, else the blob is stored raw.
const KEEP_RATIO_PERCENT: usize = 97;
/// Large chunks are first probed with a sample this long; random data skips zstd entirely.
const SAMPLE_BYTES: usize = 64 * 1024;

/// Reusable per-thread compressor.
pub struct Compressor {
    inner: zstd::bulk::Compressor<'static>,
}

impl Compressor {
    /// A compressor at `level` (1..=19; 3 is the default).
    pub fn new(level: i32) -> Self {
        Compressor {
            inner: zstd::bulk::Compressor::new(level).expect("zstd accepts levels 1..=22"),
        }
    }

    /// Compresses into `out` (reused across calls); false means store raw.
    pub fn compress_into(&mut self, data: &[u8], out: &mut Vec<u8>) -> bool {
        out.clear();
        if data.len() < 64 {
            return false;
        }
        if data.len() > 4 * SAMPLE_BYTES {
            out.reserve(zstd::zstd_safe::compress_bound(SAMPLE_BYTES));
            match self.inner.compress_to_buffer(&data[..SAMPLE_BYTES], out) {
                Ok(n) if n * 100 <= SAMPLE_BYTES * KEEP_RATIO_PERCENT => {}
                _ => return false,
            }
            out.clear();
        }
        out.reserve(zstd::zstd_safe::compress_bound(data.len()));
        match self.inner.compress_to_buffer(data, out) {
            Ok(n) => n * 100 <= data.len() * KEEP_RATIO_PERCENT,
            Err(_) => false,
        }
    }
}

thread_local! {
    /// One decompression context per thread: creating one per blob showed up at 2% of restore.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompresses a blob whose raw length is known from the index.
pub fn decompress(data: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    let out = DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new().map_err(|e| format!("zstd: {e}"))?);
        }
        d.as_mut()
            .expect("set above")
            .decompress(data, raw_len)
            .map_err(|e| format!("zstd: {e}"))
    })?;
    if out.len() != raw_len {
        return Err(format!(
            "decompressed to {} bytes, index says {raw_len}",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn compressible_is_compressed_random_is_not() {
        let mut c = Compressor::new(3);
        let text = b"lifeboat ".repeat(100_000);
        let mut z = Vec::new();
        assert!(c.compress_into(&text, &mut z), "text compresses");
        assert!(z.len() < text.len() / 10);
        assert_eq!(decompress(&z, text.len()).unwrap(), text);
        assert!(decompress(&z, text.len() - 1).is_err());
        let mut rnd = vec![0u8; 1 << 20];
        rand::thread_rng().fill_bytes(&mut rnd);
        let mut buf = Vec::new();
        assert!(
            !c.compress_into(&rnd, &mut buf),
            "random data is stored raw"
        );
    }
}
