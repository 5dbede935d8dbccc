//! Quantized-weight × quantized-activation dot products, the engine's whole arithmetic budget.
//!
//! Activations are quantized per token into blocks of 32 signed bytes with one f32 scale
//! ([`Q8Act`], like ggml's `Q8_0`/`Q8_1`), so every 4- and 8-bit weight block meets an 8-bit
//! activation block and the inner product is an integer one: `u8 × i8 → i16 → i32` on AVX2
//! (`vpmaddubsw`/`vpmaddwd`), the same on wasm simd128 (`i16x8.extmul` + `i32x4.dot_i16x8`),
//! plain integers in the scalar kernel. Per-block scales and minimums are applied in f32.
//! Weights stay in their GGUF blocks (read once per token in decode: memory-bound), nibbles
//! are unpacked in registers.
//!
//! [`dot`] is the dispatcher; [`scalar`] is the portable kernel and the ground truth for the
//! SIMD ones, which the tests (and [`self_test`]) check against an f64 reference for every
//! block type and awkward length.

pub mod scalar;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::quant::GgmlType;

/// Weights per activation block.
pub const QK: usize = 32;

/// One token's activations quantized to blocks of 32 (`x ≈ d[b] · q[32b + i]`).
#[derive(Debug, Clone, Default)]
pub struct Q8Act {
    /// Quantized values, `[-127, 127]`.
    pub q: Vec<i8>,
    /// Scale per block.
    pub d: Vec<f32>,
    /// Integer sum of each block's values (for weight minimums and offsets).
    pub isum: Vec<i32>,
}

impl Q8Act {
    /// Quantize `x` (a multiple of 32 long).
    pub fn quantize(&mut self, x: &[f32]) {
        let nb = x.len() / QK;
        self.q.resize(x.len(), 0);
        self.d.resize(nb, 0.0);
        self.isum.resize(nb, 0);
        for b in 0..nb {
            let xs = &x[b * QK..(b + 1) * QK];
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut s = 0i32;
            for (o, &v) in self.q[b * QK..(b + 1) * QK].iter_mut().zip(xs) {
                let q = (v * id).round() as i32;
                *o = q as i8;
                s += q;
            }
            self.d[b] = d;
            self.isum[b] = s;
        }
    }
}

/// Which kernel family [`dot`] runs on this CPU.
pub fn kernel_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        return "avx2";
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return "simd128";
    #[allow(unreachable_code)]
    "scalar"
}

/// `row · x` for one weight row of type `ty` (whole blocks) against the token's activations:
/// `x` in f32 (used by F32/F16 rows) and `xq` quantized (used by the integer kernels).
#[inline]
pub fn dot(ty: GgmlType, row: &[u8], x: &[f32], xq: &Q8Act) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: AVX2 and FMA are present (checked once at run time).
        if let Some(v) = unsafe { x86::dot(ty, row, x, xq) } {
            return v;
        }
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if let Some(v) = wasm::dot(ty, row, x, xq) {
        return v;
    }
    scalar::dot(ty, row, x, xq)
}

/// f64 reference: dequantize the row exactly (f64) and dot it with the *quantized* activation
/// (what the integer kernels compute, without their f32 rounding) or with `x` itself. Returns
/// the dot product and Σ|wᵢxᵢ| (the scale a relative error is measured against).
pub fn reference_dot(
    ty: GgmlType,
    row: &[u8],
    x: &[f32],
    xq: &Q8Act,
    quantized_x: bool,
) -> (f64, f64) {
    let n = row.len() / ty.block_bytes() * ty.block_elems();
    let mut w = vec![0f32; n];
    crate::quant::dequantize_row(ty, row, &mut w);
    (0..n)
        .map(|i| {
            let xi = if quantized_x {
                f64::from(xq.d[i / QK]) * f64::from(xq.q[i])
            } else {
                f64::from(x[i])
            };
            f64::from(w[i]) * xi
        })
        .fold((0.0, 0.0), |(s, a), p| (s + p, a + p.abs()))
}

/// Every supported type × awkward lengths, the dispatched kernel against the f64 reference;
/// returns (type name, worst relative error) per type. Run by the tests; meant for the browser
/// worker's start-up check too.
pub fn self_test() -> Result<Vec<(String, f64)>, String> {
    let mut out = Vec::new();
    for ty in GgmlType::ALL {
        let mut worst = 0f64;
        for n in [256usize, 512, 768, 1536, 2304] {
            if n % ty.block_elems() != 0 {
                continue;
            }
            for seed in 0..3u32 {
                let w = test_data(n, seed * 7 + 1, 1.0);
                let x = test_data(n, seed * 7 + 2, 3.0);
                let row = crate::quant::quantize_row(ty, &w);
                let mut xq = Q8Act::default();
                xq.quantize(&x);
                let float_x = matches!(ty, GgmlType::F32 | GgmlType::F16);
                let (want, scale) = reference_dot(ty, &row, &x, &xq, !float_x);
                let got = f64::from(dot(ty, &row, &x, &xq));
                let scale = scale.max(1e-9);
                let err = (got - want).abs() / scale;
                worst = worst.max(err);
                if err > 1e-5 {
                    return Err(format!(
                        "{} kernel ({}) n={n}: got {got}, f64 reference {want} (relative error {err:.2e})",
                        ty.name(),
                        kernel_name()
                    ));
                }
            }
        }
        out.push((ty.name().to_string(), worst));
    }
    Ok(out)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatched_kernel_matches_the_f64_reference_for_every_type() {
        let r = self_test().unwrap();
        assert_eq!(r.len(), 7);
        eprintln!("kernel {}: {r:?}", kernel_name());
    }

    #[test]
    fn scalar_kernel_matches_the_f64_reference_too() {
        for ty in GgmlType::ALL {
            let n = 512;
            let w = test_data(n, 3, 1.0);
            let x = test_data(n, 4, 2.0);
            let row = crate::quant::quantize_row(ty, &w);
            let mut xq = Q8Act::default();
            xq.quantize(&x);
            let fx = matches!(ty, GgmlType::F32 | GgmlType::F16);
            let (want, scale) = reference_dot(ty, &row, &x, &xq, !fx);
            let got = f64::from(scalar::dot(ty, &row, &x, &xq));
            assert!(
                (got - want).abs() / scale < 1e-5,
                "{}: {got} vs {want}",
                ty.name()
            );
        }
    }

    #[test]
    fn activation_quantization_is_within_half_a_step() {
        let x = test_data(96, 9, 5.0);
        let mut q = Q8Act::default();
        q.quantize(&x);
        for (i, &v) in x.iter().enumerate() {
            let d = q.d[i / QK];
            assert!((f32::from(q.q[i]) * d - v).abs() <= d * 0.5 + 1e-6);
        }
        let zeros = vec![0f32; 32];
        q.quantize(&zeros);
        assert!(q.q.iter().all(|&v| v == 0) && q.d[0] == 0.0);
    }
}
