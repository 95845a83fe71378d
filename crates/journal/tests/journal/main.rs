//! `lifeboat-journal`'s integration tests, in one test binary (one link instead of one per
//! file). Crash tests re-run this binary with `--exact <module>::<child test>` as the process
//! they SIGKILL.

mod archive;
mod common;
mod crash;
mod journal;
mod pitr;
mod pitr_archive;
mod pitr_crash;
mod pitr_diskfull;
mod pitr_perf;
