//! Element-wise math written so LLVM vectorises it (no libm calls, no branches or
//! float→int casts in the inner loops), and [`multiversion!`], which compiles a function
//! again for AVX2+FMA on x86-64 (picked at run time) and for `simd128` in wasm.
//!
//! Shared by the embedder's fast CPU encoder (node-lite) and the chat engine (shoal-llm), so
//! both keep one `exp`.

#![warn(missing_docs)]
/// `eˣ` for `x ≤ 88` (relative error ≈ 2 ulp; `x < -87.3` gives ≈ 1e-38, not 0).
#[inline(always)]
#[allow(clippy::excessive_precision)] // published coefficients, as printed
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2²³: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    // n as an integer, read from t's mantissa (no saturating float→int cast to vectorise).
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO;
    // Cephes expf polynomial.
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let e = p * (r * r) + r + 1.0;
    e * f32::from_bits((ni.wrapping_add(127) as u32) << 23)
}

/// Sum with 8 independent accumulators (vectorisable, and more accurate than one chain).
#[inline(always)]
pub fn sum8(xs: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    acc.iter().sum::<f32>() + tail
}

/// Dot product with 8 independent accumulators (vectorisable; order differs from a plain sum).
#[inline(always)]
pub fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Whether this x86-64 CPU has AVX2 and FMA (std caches the detection).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Define `fn $name(args) -> R` that runs `$generic(args)` (an `#[inline(always)]` fn) compiled
/// for AVX-512F, then AVX2+FMA, when the CPU has them (x86-64, detected at run time), and
/// compiled with `simd128` in wasm when the *calling* crate's feature `wasm-simd` is on.
///
/// ```
/// #[inline(always)]
/// fn scale_generic(xs: &mut [f32], s: f32) {
///     for x in xs {
///         *x *= s;
///     }
/// }
/// shoal_math::multiversion! {
///     /// Multiply in place.
///     pub fn scale(xs: &mut [f32], s: f32) => scale_generic
/// }
/// let mut v = vec![1.0f32; 9];
/// scale(&mut v, 2.0);
/// assert!(v.iter().all(|&x| x == 2.0));
/// ```
#[macro_export]
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $generic:ident) => {
        $(#[$m])*
        #[cfg_attr(
            all(target_arch = "wasm32", feature = "wasm-simd"),
            target_feature(enable = "simd128")
        )]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                if ::std::is_x86_feature_detected!("avx512f") && $crate::has_avx2_fma() {
                    // SAFETY: the CPU has AVX-512F, AVX2 and FMA (checked just above).
                    #[allow(unsafe_code)]
                    return unsafe { avx512($($arg),*) };
                }
                if $crate::has_avx2_fma() {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above).
                    #[allow(unsafe_code)]
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_3_ulp_of_libm() {
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = libm::exp(f64::from(x));
            let rel = ((f64::from(exp(x)) - want) / want).abs();
            assert!(rel < 3.0 * f64::from(f32::EPSILON), "exp({x}): rel {rel:e}");
            x += 0.0137;
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1e30) >= 0.0 && exp(-1e30) < 1e-37);
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn lane_sums_equal_plain_sums_up_to_rounding() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f64 = a.iter().map(|&x| f64::from(x)).sum();
        assert!((f64::from(sum8(&a)) - plain).abs() < 1e-5);
        let pd: f64 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum();
        assert!((f64::from(dot8(&a, &b)) - pd).abs() < 1e-5);
        assert_eq!(sum8(&[]), 0.0);
    }
}
