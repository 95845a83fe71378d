//! Fault injection: damaging stored objects in place.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

/// Inverts every bit of the byte at `offset` in `path` (so it is guaranteed to change) and
/// returns the original byte. Read-only files are made writable for the write and restored.
pub fn flip_byte(path: &Path, offset: u64) -> io::Result<u8> {
    let perms = std::fs::metadata(path)?.permissions();
    let readonly = perms.mode() & 0o200 == 0;
    if readonly {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(perms.mode() | 0o200))?;
    }
    let result = (|| {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        let len = f.metadata()?.len();
        if offset >= len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "offset {offset} is past the end of {} ({len} bytes)",
                    path.display()
                ),
            ));
        }
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, offset)?;
        f.write_all_at(&[!b[0]], offset)?;
        f.sync_all()?;
        Ok(b[0])
    })();
    if readonly {
        std::fs::set_permissions(path, perms)?;
    }
    result
}

/// Flips the byte in the middle of `path` (see [`flip_byte`]); returns its offset.
pub fn flip_middle_byte(path: &Path) -> io::Result<u64> {
    let len = std::fs::metadata(path)?.len();
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is empty", path.display()),
        ));
    }
    let offset = len / 2;
    flip_byte(path, offset)?;
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_and_flips_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"abcdef").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
        assert_eq!(flip_byte(&p, 2).unwrap(), b'c');
        assert_eq!(std::fs::read(&p).unwrap()[2], !b'c');
        assert_eq!(flip_middle_byte(&p).unwrap(), 3);
        flip_byte(&p, 2).unwrap();
        flip_byte(&p, 3).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"abcdef");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o444
        );
        assert!(flip_byte(&p, 6).is_err());
    }
}
