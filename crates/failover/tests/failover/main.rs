//! `lifeboat-failover`'s integration tests, in one test binary (one link instead of one per
//! file). `hook_death` re-runs this binary as the manager process it SIGKILLs.

mod common;
mod decisions;
mod fencing;
mod health;
mod hook_death;
mod repeated;
mod resume;
