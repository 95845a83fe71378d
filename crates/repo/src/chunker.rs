//! Content-defined chunking (FastCDC 2020) with a secret, per-repository gear table.
//!
//! A public gear table lets an observer of chunk sizes confirm guessed file contents; the table
//! here is 256 words of keyed-BLAKE3 output, so cut points depend on a 256-bit repository secret
//! (stronger than XOR-ing one 64-bit seed into the public table, which `fastcdc` offers).

use std::io::{self, Read};

use fastcdc::v2020::{cut_gear, select_masks, Normalization};
use serde::{Deserialize, Serialize};

/// Chunk size bounds, stored in the repository config so related repositories dedup alike.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    /// Smallest chunk (except a file's last).
    pub min_size: u32,
    /// Target average.
    pub avg_size: u32,
    /// Hard upper bound.
    pub max_size: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 8 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    /// Rejects bounds outside what FastCDC supports.
    pub fn validate(&self) -> Result<(), String> {
        let ok = self.min_size >= 64
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size
            && self.max_size <= 16 * 1024 * 1024
            && self.avg_size.is_power_of_two()
            && self.min_size.is_multiple_of(2)
            && self.max_size.is_multiple_of(2);
        if ok {
            Ok(())
        } else {
            Err(format!("invalid chunker parameters {self:?}"))
        }
    }
}

/// A chunker bound to one repository's secret gear table; one per worker thread (owns a buffer).
pub struct Chunker {
    params: ChunkerParams,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    mask_s: u64,
    mask_l: u64,
    buf: Vec<u8>,
}

impl Chunker {
    /// Builds the gear table from the repository's 32-byte chunker key.
    pub fn new(params: ChunkerParams, key: &[u8; 32]) -> Self {
        let mut bytes = [0u8; 256 * 8];
        blake3::Hasher::new_keyed(key)
            .update(b"lifeboat chunker gear table v1")
            .finalize_xof()
            .fill(&mut bytes);
        let mut gear = Box::new([0u64; 256]);
        let mut gear_ls = Box::new([0u64; 256]);
        for i in 0..256 {
            let w = u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            gear[i] = w;
            gear_ls[i] = w << 1;
        }
        let (mask_s, mask_l) = select_masks(params.avg_size as usize, Normalization::Level1);
        Chunker {
            params,
            gear,
            gear_ls,
            mask_s,
            mask_l,
            buf: Vec::new(),
        }
    }

    /// Streams `r` and calls `f` with each chunk in order; returns the bytes read.
    ///
    /// Memory is bounded by `2 × max_size` per chunker whatever the input length.
    pub fn chunk_reader<R: Read, E: From<io::Error>>(
        &mut self,
        mut r: R,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let max = self.params.max_size as usize;
        if self.buf.len() < 2 * max {
            self.buf.resize(2 * max, 0);
        }
        let (mut start, mut end, mut eof, mut total) = (0usize, 0usize, false, 0u64);
        loop {
            // Keep at least max_size bytes ahead of `start` unless the input ended.
            if !eof && end - start < max {
                if start > 0 {
                    self.buf.copy_within(start..end, 0);
                    end -= start;
                    start = 0;
                }
                while end < self.buf.len() {
                    let n = match r.read(&mut self.buf[end..]) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e.into()),
                    };
                    if n == 0 {
                        eof = true;
                        break;
                    }
                    end += n;
                    total += n as u64;
                }
            }
            if start == end {
                return Ok(total);
            }
            let len = self.cut(&self.buf[start..end]);
            f(&self.buf[start..start + len])?;
            start += len;
        }
    }

    /// Length of the next chunk at the front of `data`.
    pub fn cut(&self, data: &[u8]) -> usize {
        let p = &self.params;
        let (_, len) = cut_gear(
            data,
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear[..],
            &self.gear_ls[..],
        );
        len.clamp(1, data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; n];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    fn chunks(c: &mut Chunker, d: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        c.chunk_reader::<_, io::Error>(d, |ch| {
            out.push(ch.to_vec());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn chunks_reassemble_and_respect_bounds() {
        let p = ChunkerParams::default();
        let mut c = Chunker::new(p, &[1; 32]);
        let d = data(20 << 20, 7);
        let cs = chunks(&mut c, &d);
        assert_eq!(cs.concat(), d);
        for ch in &cs[..cs.len() - 1] {
            assert!(ch.len() >= p.min_size as usize && ch.len() <= p.max_size as usize);
        }
        let avg = d.len() / cs.len();
        assert!((512 << 10..4 << 20).contains(&avg), "average {avg}");
    }

    #[test]
    fn cut_points_depend_on_the_key_and_survive_insertions() {
        let p = ChunkerParams::default();
        let d = data(16 << 20, 9);
        let a = chunks(&mut Chunker::new(p, &[1; 32]), &d);
        let b = chunks(&mut Chunker::new(p, &[2; 32]), &d);
        let lens = |v: &Vec<Vec<u8>>| v.iter().map(Vec::len).collect::<Vec<_>>();
        assert_ne!(lens(&a), lens(&b), "different keys must cut differently");
        // Insert bytes near the start: most later chunks are unchanged (CDC).
        let mut shifted = d[..1000].to_vec();
        shifted.extend_from_slice(b"inserted!");
        shifted.extend_from_slice(&d[1000..]);
        let s = chunks(&mut Chunker::new(p, &[1; 32]), &shifted);
        let shared = s.iter().filter(|c| a.contains(c)).count();
        assert!(
            shared + 2 >= a.len(),
            "only {shared} of {} chunks survived",
            a.len()
        );
    }

    #[test]
    fn empty_and_small_inputs() {
        let mut c = Chunker::new(ChunkerParams::default(), &[0; 32]);
        assert!(chunks(&mut c, b"").is_empty());
        assert_eq!(chunks(&mut c, b"abc"), vec![b"abc".to_vec()]);
    }
}
