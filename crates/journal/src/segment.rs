//! Segment files `<dir>/<first LSN, 20 digits>.seg`: a 64-byte header, then records.
//!
//! Header (little endian): `magic "LBJSEG01"` (8) · `version` u32 · `crc32c` u32 (of the header
//! with this field zeroed) · `salt` u64 · `first_lsn` u64 · `prev_hash` (32 bytes) (hash of the last
//! record of the previous segment, zeros for the first segment).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::record::{self, Hash, Record, RecordError};
use crate::RawLsn;

/// Segment magic.
pub const SEGMENT_MAGIC: [u8; 8] = *b"LBJSEG01";
/// Segment format version written by this code.
pub const SEGMENT_VERSION: u32 = 1;
/// Size of the segment header; records start here (8-aligned).
pub const SEGMENT_HEADER_LEN: usize = 64;

/// A segment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Random per-segment salt mixed into every record CRC.
    pub salt: u64,
    /// LSN of the first record in the segment.
    pub first_lsn: RawLsn,
    /// Hash of the previous segment's last record.
    pub prev_hash: Hash,
}

impl SegmentHeader {
    /// Serialises the header.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.salt.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_lsn.to_le_bytes());
        b[32..64].copy_from_slice(&self.prev_hash);
        let c = crc32c::crc32c(&b);
        b[12..16].copy_from_slice(&c.to_le_bytes());
        b
    }

    /// Parses and checks a header.
    pub fn decode(b: &[u8]) -> std::result::Result<Self, String> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err(format!(
                "header is {} bytes, needs {SEGMENT_HEADER_LEN}",
                b.len()
            ));
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err("bad segment magic".into());
        }
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4"));
        if version != SEGMENT_VERSION {
            return Err(format!("unsupported segment version {version}"));
        }
        let stored = u32::from_le_bytes(b[12..16].try_into().expect("4"));
        let mut z = [0u8; SEGMENT_HEADER_LEN];
        z.copy_from_slice(&b[..SEGMENT_HEADER_LEN]);
        z[12..16].fill(0);
        if crc32c::crc32c(&z) != stored {
            return Err("bad segment header CRC".into());
        }
        Ok(SegmentHeader {
            salt: u64::from_le_bytes(b[16..24].try_into().expect("8")),
            first_lsn: u64::from_le_bytes(b[24..32].try_into().expect("8")),
            prev_hash: b[32..64].try_into().expect("32"),
        })
    }
}

/// File name of the segment starting at `first_lsn`.
pub fn segment_name(first_lsn: RawLsn) -> String {
    format!("{first_lsn:020}.seg")
}

/// Segment files in `dir`, sorted by first LSN (parsed from the name).
pub fn list_segments(dir: &Path) -> Result<Vec<(RawLsn, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".seg") else {
            continue;
        };
        if stem.len() != 20 {
            continue;
        }
        if let Ok(lsn) = stem.parse::<RawLsn>() {
            out.push((lsn, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Fsyncs a directory so renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Creates a new segment crash-safely: temp file, header, preallocation, fsync, rename,
/// directory fsync. Returns the open file (positioned for `write_at`) and its path.
pub fn create_segment(
    dir: &Path,
    header: &SegmentHeader,
    prealloc: u64,
) -> Result<(File, PathBuf)> {
    let path = dir.join(segment_name(header.first_lsn));
    let tmp = dir.join(format!("{}.tmp", segment_name(header.first_lsn)));
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    let prepared = f
        .write_all(&header.encode())
        .and_then(|()| preallocate(&f, prealloc))
        .and_then(|()| f.sync_all());
    if let Err(e) = prepared {
        // Give the space back (a full disk is the usual cause); open deletes leftovers anyway.
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)?;
    Ok((f, path))
}

/// Zero-fills a spare segment file of `len` bytes and fsyncs it, for the writer to turn into
/// its next segment ([`create_segment_from_spare`]). Written zeros, not `fallocate`: ext4
/// allocates fallocated blocks as *unwritten* extents, and converting them on every later
/// `fdatasync` costs a second synchronous metadata write — it halved group-commit throughput
/// here (`bench/results/*-journal/NOTES.md`). Named `*.seg.tmp`, so open removes leftovers.
pub fn prepare_spare(dir: &Path, len: u64) -> Result<PathBuf> {
    use std::os::unix::fs::FileExt;
    let path = dir.join(format!("spare-{:016x}.seg.tmp", rand::random::<u64>()));
    let filled = (|| {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let zeros = vec![0u8; 1 << 20];
        let mut pos = 0;
        while pos < len {
            let n = (len - pos).min(zeros.len() as u64) as usize;
            f.write_all_at(&zeros[..n], pos)?;
            pos += n as u64;
        }
        f.sync_all()
    })();
    if let Err(e) = filled {
        let _ = fs::remove_file(&path);
        return Err(Error::io(&path, e));
    }
    Ok(path)
}

/// Turns a prepared spare into the segment `header` names: header written and synced, rename,
/// directory fsync (the same crash story as [`create_segment`]: before the rename it is a
/// `*.seg.tmp` that open deletes).
pub fn create_segment_from_spare(
    dir: &Path,
    header: &SegmentHeader,
    spare: &Path,
) -> Result<(File, PathBuf)> {
    use std::os::unix::fs::FileExt;
    let path = dir.join(segment_name(header.first_lsn));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(spare)
        .map_err(|e| Error::io(spare, e))?;
    f.write_all_at(&header.encode(), 0)
        .and_then(|()| f.sync_data())
        .map_err(|e| Error::io(spare, e))?;
    fs::rename(spare, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)?;
    Ok((f, path))
}

/// Reserves blocks up to `len` (real allocation via `fallocate`, so later `fdatasync`s need
/// not record new block allocations); falls back to a sparse `set_len` where unsupported.
pub fn preallocate(f: &File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    if len == 0 || f.metadata()?.len() >= len {
        return Ok(());
    }
    match nix::fcntl::fallocate(
        f.as_raw_fd(),
        nix::fcntl::FallocateFlags::empty(),
        0,
        len as i64,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) => f.set_len(len),
        Err(e) => Err(e.into()),
    }
}

/// Sector size assumed for torn writes.
pub const SECTOR: usize = 512;

/// True if a 512-byte-aligned, all-zero sector overlaps `bytes[from..to]`: an unwritten sector
/// of preallocated (zeroed) space, which is what a torn multi-sector write leaves behind.
pub fn zero_sector_in(bytes: &[u8], from: usize, to: usize) -> bool {
    let mut s = from / SECTOR * SECTOR;
    while s < to && s + SECTOR <= bytes.len() {
        if bytes[s..s + SECTOR].iter().all(|&b| b == 0) {
            return true;
        }
        s += SECTOR;
    }
    false
}

/// Result of scanning one segment's bytes.
#[derive(Debug)]
pub struct Scan {
    /// The segment header.
    pub header: SegmentHeader,
    /// Records that decoded and chained, in order, with their byte offsets.
    pub records: Vec<(usize, Record)>,
    /// Offset just past the last good record.
    pub end: usize,
    /// Hash of the last good record (or the header's `prev_hash`).
    pub last_hash: Hash,
    /// Why the scan stopped before the end of the bytes, unless it was zeroed space.
    pub stop: Option<(RawLsn, RecordError)>,
    /// Offset of an intact record (right salt, later LSN) beyond a failure, if any: the
    /// damage is followed by data, so it may be more than a torn tail.
    pub valid_after_stop: Option<usize>,
}

/// What [`scan`] does with payloads.
enum Payloads<'a> {
    Drop,
    Copy,
    Share(&'a bytes::Bytes),
}

/// Scans a segment: decodes records under its salt, checking LSNs and the hash chain from the
/// header. Stops at zeroed space or at the first failure. Payloads are copied if
/// `keep_payloads`, else left empty.
pub fn scan(path: &Path, bytes: &[u8], keep_payloads: bool) -> Result<Scan> {
    let mode = if keep_payloads {
        Payloads::Copy
    } else {
        Payloads::Drop
    };
    scan_with(path, bytes, mode)
}

/// [`scan`] keeping payloads as slices of `bytes` (no per-record allocation).
pub fn scan_shared(path: &Path, bytes: &bytes::Bytes) -> Result<Scan> {
    scan_with(path, bytes, Payloads::Share(bytes))
}

fn scan_with(path: &Path, bytes: &[u8], payloads: Payloads<'_>) -> Result<Scan> {
    let header = SegmentHeader::decode(bytes).map_err(|reason| Error::BadSegment {
        path: path.to_path_buf(),
        reason,
    })?;
    let mut pos = SEGMENT_HEADER_LEN;
    let mut lsn = header.first_lsn;
    let mut last_hash = header.prev_hash;
    // Upper bound on the record count (each takes ≥ one header): reserving it avoids
    // regrowing a large vector; untouched capacity costs no memory.
    let mut records =
        Vec::with_capacity(bytes.len().saturating_sub(SEGMENT_HEADER_LEN) / record::HEADER_LEN);
    let mut stop = None;
    while pos < bytes.len() {
        let res = record::decode_frame(header.salt, &bytes[pos..]).and_then(|(rec, len, used)| {
            record::check_follows(&rec, lsn, &last_hash).map(|_| (rec, len, used))
        });
        match res {
            Ok((mut rec, len, used)) => {
                last_hash = rec.hash;
                let body = pos + record::HEADER_LEN..pos + record::HEADER_LEN + len;
                match payloads {
                    Payloads::Drop => {}
                    Payloads::Copy => rec.payload = bytes::Bytes::copy_from_slice(&bytes[body]),
                    Payloads::Share(shared) => rec.payload = shared.slice(body),
                }
                records.push((pos, rec));
                pos += used;
                lsn += 1;
            }
            Err(RecordError::Empty) if bytes[pos..].iter().all(|&b| b == 0) => break,
            Err(e) => {
                stop = Some((lsn, e));
                break;
            }
        }
    }
    let mut valid_after_stop = None;
    if stop.is_some() {
        let mut p = pos + record::ALIGN;
        while p + record::HEADER_LEN <= bytes.len() {
            if bytes[p..p + 4] == record::RECORD_MAGIC {
                if let Ok((rec, _)) = record::decode(header.salt, &bytes[p..]) {
                    if rec.lsn >= lsn {
                        valid_after_stop = Some(p);
                        break;
                    }
                }
            }
            p += record::ALIGN;
        }
    }
    Ok(Scan {
        header,
        records,
        end: pos,
        last_hash,
        stop,
        valid_after_stop,
    })
}
