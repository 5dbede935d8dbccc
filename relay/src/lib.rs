//! The Shoal relay as a library, so its binary, tests and benches share one code base.

pub mod log;
