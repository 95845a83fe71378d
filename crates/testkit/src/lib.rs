//! Dev-only helpers for Lifeboat's tests.
//!
//! * [`tree`]: a deterministic random source tree generator (nested dirs, empty and duplicate
//!   files, symlinks, an empty dir, a non-UTF-8 name, hard links, distinct modes and mtimes).
//! * [`compare`]: [`assert_trees_equal`], which compares content, mode, mtime, symlink targets
//!   and hard-link identity of two trees.
//! * [`process`]: run a command and deliver a signal (SIGKILL, SIGINT, …) after a delay or when
//!   a condition holds, returning its exit status.
//! * [`fault`]: [`flip_byte`] and friends for corruption tests.
//! * [`proxy`]: [`FaultProxy`], a TCP proxy that passes, delays, black-holes or resets
//!   traffic on command, for partition tests against real servers on loopback.
//! * [`env`]: [`TmpfsMount`] for disk-full cases, [`test_locations`] (local + loopback S3).
//! * [`cli`]: [`Lifeboat`], a small wrapper that runs the `lifeboat` binary against one
//!   repository with test-friendly environment (cheap KDF, password set, no inherited config).
//! * [`repo_cli`]: the richer harness the CLI's own end-to-end tests share (repositories with
//!   clean environments, tree builders, JSON helpers, restore comparison).

pub mod cli;
pub mod compare;
pub mod env;
pub mod fault;
pub mod process;
pub mod proxy;
pub mod repo_cli;
pub mod tree;

pub use cli::{Lifeboat, Run};
pub use compare::{assert_trees_equal, compare_trees, Difference};
pub use env::{test_locations, TmpfsMount};
pub use fault::{flip_byte, flip_middle_byte};
pub use process::{run_with_signal, Outcome, Trigger};
pub use proxy::{FaultProxy, ProxyMode};
pub use tree::{generate_tree, TreeSpec, TreeStats};

/// Re-exported so tests need not depend on `nix` just to name a signal.
pub use nix::sys::signal::Signal;

/// Where `lifeboat restore --target TARGET` puts the backed-up absolute path `source`:
/// `TARGET/<source without its leading />`.
pub fn restored_path(target: &std::path::Path, source: &std::path::Path) -> std::path::PathBuf {
    assert!(source.is_absolute(), "{} is not absolute", source.display());
    target.join(source.strip_prefix("/").expect("absolute path"))
}
