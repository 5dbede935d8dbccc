//! Deterministic test data shared by the kernels' self-test (which also runs in the
//! browser) and the unit tests; no dependency on any other module.

/// Deterministic pseudo-random values in `[-scale, scale]` (xorshift).
pub fn test_data(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(0x9E37_79B9) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 - 0.5) * 2.0 * scale
        })
        .collect()
}
