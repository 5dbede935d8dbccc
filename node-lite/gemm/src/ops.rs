//! Element-wise pieces of the encoder, written so LLVM vectorises them (no libm calls, no
//! branches or float→int casts in the inner loops): `exp`, `erf`, GELU, softmax, residual +
//! LayerNorm. GELU and softmax are compiled again for AVX-512 and AVX2 on x86-64 (picked at
//! run time, like the GEMM kernels); in wasm with feature `wasm-simd` for `simd128`.

pub use shoal_math::exp;
use shoal_math::sum8;

/// `erf(x)`, max absolute error ≈ 4.3e-7 (checked against libm's f64 `erf` in the tests): the
/// rational approximation XLA and Eigen use for f32, on `x` clamped to ±4 (`erf(4) = 1 − 1.5e-8`).
/// One polynomial pair and a division, no branch: GELU's erf was 13 % of the browser's int12
/// forward pass when it also computed a Chebyshev `erfc` for `|x| ≥ 0.5` (error 1e-7, twice the
/// work); 4e-7 is far below what the weights' rounding already moves.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    erf_rational(x)
}

#[inline(always)]
#[allow(clippy::excessive_precision)] // published coefficients, as printed
fn erf_rational(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = -2.726_142_3e-10_f32;
    let p = p * x2 + 2.770_681_4e-8;
    let p = p * x2 + -2.101_024_e-6;
    let p = p * x2 + -5.692_506_4e-5;
    let p = p * x2 + -7.349_906_3e-4;
    let p = p * x2 + -2.954_600_1e-3;
    let p = p * x2 + -1.609_603_3e-2;
    let q = -1.456_607_2e-5_f32;
    let q = q * x2 + -2.133_740_6e-4;
    let q = q * x2 + -1.682_827e-3;
    let q = q * x2 + -7.373_329_4e-3;
    let q = q * x2 + -1.426_474e-2;
    x * p / q
}

shoal_math::multiversion! {
    /// GELU with the exact (erf) form, in place: `x · ½(1 + erf(x/√2))`.
    pub fn gelu(xs: &mut [f32]) => gelu_generic
}

shoal_math::multiversion! {
    /// Softmax of one row, in place.
    pub fn softmax(row: &mut [f32]) => softmax_generic
}

#[inline(always)]
fn gelu_generic(xs: &mut [f32]) {
    for x in xs {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

#[inline(always)]
fn softmax_generic(row: &mut [f32]) {
    // 8 independent lanes for the max and the sum, so both vectorise.
    let mut m8 = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (m, v) in m8.iter_mut().zip(c) {
            // A select, not `f32::max`: its NaN rule keeps LLVM from vectorising in wasm
            // (`f32x4.pmax` is exactly this).
            *m = if *m < *v { *v } else { *m };
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&m8)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for v in row.iter_mut() {
        *v = exp(*v - max);
    }
    let inv = 1.0 / sum8(row);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// `out = LayerNorm(x + residual)` over one row (`residual` may be `None`).
#[cfg_attr(
    all(target_arch = "wasm32", feature = "wasm-simd"),
    target_feature(enable = "simd128")
)]
pub fn layer_norm(
    x: &[f32],
    residual: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    let n = x.len();
    match residual {
        Some(r) => {
            for ((o, a), b) in out.iter_mut().zip(x).zip(r) {
                *o = a + b;
            }
        }
        None => out.copy_from_slice(x),
    }
    let mean = sum8(out) / n as f32;
    for o in out.iter_mut() {
        *o -= mean;
    }
    let mut sq = [0f32; 8];
    let mut chunks = out.chunks_exact(8);
    for c in &mut chunks {
        for (a, v) in sq.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    let var =
        (sq.iter().sum::<f32>() + chunks.remainder().iter().map(|v| v * v).sum::<f32>()) / n as f32;
    let inv = 1.0 / (var + eps).sqrt();
    for ((o, g), b) in out.iter_mut().zip(gamma).zip(beta) {
        *o = *o * inv * g + b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_within_5e_7_of_libm() {
        let mut worst = (0.0f64, 0.0f32);
        let mut x = -6.0f32;
        while x <= 6.0 {
            let e = (f64::from(erf(x)) - libm::erf(f64::from(x))).abs();
            if e > worst.0 {
                worst = (e, x);
            }
            x += 1.0 / 4096.0;
        }
        eprintln!("erf: max abs error {:.3e} at {}", worst.0, worst.1);
        assert!(
            worst.0 < 5e-7,
            "erf max abs error {:e} at {}",
            worst.0,
            worst.1
        );
    }

    #[test]
    fn gelu_matches_the_erf_definition() {
        let mut xs: Vec<f32> = (-400..=400).map(|i| i as f32 / 50.0).collect();
        let want: Vec<f64> = xs
            .iter()
            .map(|&x| {
                let x = f64::from(x);
                0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
            })
            .collect();
        gelu(&mut xs);
        for (g, w) in xs.iter().zip(&want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{g} vs {w}");
        }
    }

    #[test]
    fn softmax_and_layer_norm_match_f64() {
        let mut row: Vec<f32> = (0..37).map(|i| ((i * 7) % 11) as f32 * 0.9 - 3.0).collect();
        let src = row.clone();
        softmax(&mut row);
        let max = src
            .iter()
            .copied()
            .fold(f64::MIN, |a, b| a.max(f64::from(b)));
        let z: f64 = src.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        for (s, v) in row.iter().zip(&src) {
            let w = (f64::from(*v) - max).exp() / z;
            assert!((f64::from(*s) - w).abs() < 1e-7);
        }

        let x: Vec<f32> = (0..45)
            .map(|i| (i as f32 * 0.37).sin() * 4.0 + 1.0)
            .collect();
        let r: Vec<f32> = (0..45).map(|i| (i as f32 * 0.11).cos()).collect();
        let g: Vec<f32> = (0..45).map(|i| 1.0 + i as f32 * 0.01).collect();
        let b: Vec<f32> = (0..45).map(|i| i as f32 * -0.02).collect();
        let mut out = vec![0.0; 45];
        layer_norm(&x, Some(&r), &g, &b, 1e-12, &mut out);
        let s: Vec<f64> = x.iter().zip(&r).map(|(a, b)| f64::from(*a + *b)).collect();
        let mean = s.iter().sum::<f64>() / 45.0;
        let var = s.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 45.0;
        for i in 0..45 {
            let w = (s[i] - mean) / (var + 1e-12).sqrt() * f64::from(g[i]) + f64::from(b[i]);
            assert!((f64::from(out[i]) - w).abs() < 1e-5, "{} vs {w}", out[i]);
        }
    }
}
