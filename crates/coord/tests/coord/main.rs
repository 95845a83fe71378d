//! `lifeboat-coord`'s integration tests, in one test binary (one link instead of one per
//! file). `processes` re-runs this binary as the holder processes it kills and stops.

mod conformance;
mod fence;
mod processes;
mod properties;
