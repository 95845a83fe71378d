//! The PostgreSQL backend (in progress).
