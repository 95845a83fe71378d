//! `lifeboat-coord-node`'s integration tests, in one test binary: real node processes on each
//! coordination store, and what an operator sees.

mod multiprocess;
mod operator;
