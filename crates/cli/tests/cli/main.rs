//! The `lifeboat` binary's integration tests, in one test binary (one link instead of one per
//! file). Shared helpers live in `lifeboat_testkit::repo_cli`.

mod copy;
mod corruption;
mod diff_stats;
mod e2e;
mod faults;
mod forget;
mod journal;
mod kill;
mod new_user;
mod prune;
mod stream_child;
mod verify;
