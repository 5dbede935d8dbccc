//! The sans-IO job engine (in progress).
