//! Owner-only permissions for the local backend: key slots and data must not be readable by
//! other local users, so directories are created 0700 and objects 0600 (as restic does).

use std::fs::{DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Mode of every directory the local backend creates.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of every object the local backend writes.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates the missing directories from `root` down to the parent of `key`, each 0700.
///
/// Done before the backend writes, so its staging file appears only inside a private
/// directory; existing directories (e.g. one the user made for the repository) are left as
/// they are.
pub(crate) fn create_private_parents(root: &Path, key: &str) -> io::Result<()> {
    let path = root.join(key);
    match path.parent() {
        Some(parent) => DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(parent),
        None => Ok(()),
    }
}

/// Restricts the object at `key` to its owner (the backend creates it with the umask's mode).
pub(crate) fn make_private(root: &Path, key: &str) -> io::Result<()> {
    std::fs::set_permissions(root.join(key), Permissions::from_mode(FILE_MODE))
}
