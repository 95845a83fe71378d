//! Documented exit codes (also in README.md and `docs/cli.md`).

use std::process::ExitCode;

use lifeboat_repo::Error;

/// Success.
pub const OK: u8 = 0;
/// A fatal error: nothing (more) was done.
pub const FATAL: u8 = 1;
/// The command finished, but some source files could not be read or some paths not restored.
pub const PARTIAL: u8 = 3;
/// `check` found damage.
pub const DAMAGED: u8 = 4;
/// No repository at the location.
pub const NO_REPOSITORY: u8 = 10;
/// Wrong password or key file.
pub const WRONG_PASSWORD: u8 = 11;
/// Repository format is newer than this binary.
pub const UNSUPPORTED_VERSION: u8 = 12;
/// Another process holds a conflicting repository lock.
pub const LOCKED: u8 = 13;
/// Cancelled (Ctrl-C / SIGTERM); nothing half-done was committed.
pub const INTERRUPTED: u8 = 130;

/// Maps an error chain to its exit code.
pub fn for_error(e: &anyhow::Error) -> ExitCode {
    let code = e
        .chain()
        .find_map(|c| c.downcast_ref::<Error>())
        .map(|e| match e {
            Error::NotInitialized { .. } => NO_REPOSITORY,
            Error::WrongPassword { .. } => WRONG_PASSWORD,
            Error::UnsupportedVersion { .. } => UNSUPPORTED_VERSION,
            Error::Cancelled => INTERRUPTED,
            Error::Locked { .. } => LOCKED,
            Error::PruneRefused { .. } => DAMAGED,
            _ => FATAL,
        })
        .unwrap_or(FATAL);
    ExitCode::from(code)
}

/// What to do next, for errors whose library message names no command or flag.
pub fn hint(e: &anyhow::Error) -> Option<&'static str> {
    let e = e.chain().find_map(|c| c.downcast_ref::<Error>())?;
    Some(match e {
        Error::NotInitialized { .. } => {
            "run `lifeboat init` first, or check --repo / LIFEBOAT_REPOSITORY"
        }
        Error::Corrupt { .. } => "run `lifeboat check` for a full report",
        Error::BlobNotFound { .. } => "run `lifeboat repair index`, then `lifeboat check`",
        Error::SnapshotNotFound { .. } => "list them with `lifeboat snapshots`",
        Error::Locked { .. } => {
            "wait for it to finish or retry with --retry-lock DURATION; `lifeboat unlock` removes it once stale, `lifeboat unlock --all` if you are sure its holder is dead"
        }
        Error::KeyInUse { .. } => "open the repository with another --password-file or --key-file",
        Error::LockLost { .. } => "run the command again",
        Error::BadPattern { what: "include", .. } => "fix the --include pattern",
        Error::BadPattern { .. } => "fix the --exclude pattern",
        Error::UnrelatedRepositories { .. } => {
            "create the target with `lifeboat init --copy-chunker-params --from SOURCE`"
        }
        _ => return None,
    })
}

/// `lifeboat ls | head` must not report an error.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .map(|io| io.kind())
            .or_else(|| {
                c.downcast_ref::<serde_json::Error>()
                    .and_then(|j| j.io_error_kind())
            })
            == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// The error chain as one line, skipping causes whose text an outer message already includes.
pub fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
