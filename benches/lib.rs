//! Criterion benches for meshd live in `benches/*.rs`; this crate has no library code.
