//! `lifeboat-repo`'s integration tests, in one test binary (one link instead of one per file).

mod engines;
mod retention;
mod roundtrip;
mod service;
