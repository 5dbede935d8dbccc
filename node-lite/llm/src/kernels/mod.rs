//! Quantized-weight × quantized-activation products, the engine's whole arithmetic budget.
//!
//! Activations are quantized per token into blocks of 32 signed bytes with one f32 scale
//! (like ggml's `Q8_0`/`Q8_1`), so every 4- and 8-bit weight block meets an 8-bit activation
//! block and the inner product is an integer one. Weights are repacked at load
//! ([`packed::PackedMat`]): rows interleaved in groups so one instruction multiplies a
//! 4-byte activation broadcast with 4 weights of each of `R` rows (`vpdpbusd` with AVX-512
//! VNNI or AVX-VNNI, `vpmaddubsw`+`vpmaddwd` on AVX2, `i32x4.relaxed_dot_i8x16_i7x16_add` with
//! wasm relaxed SIMD, `i32x4.dot_i16x8_s` with simd128), every accumulator lane one output row.
//! Decode is a GEMV (each weight byte read once per token: memory-bound); prefill runs tiles
//! of `R` rows × up to 4 tokens, so an unpacked weight register serves four tokens.
//!
//! Types that are not repacked (Q6_K, F16, F32) use the per-row [`dot`] kernels.
//! [`scalar`] and [`packed::gemm_scalar`] are the portable ground truth; [`self_test`]
//! checks whatever this build and CPU dispatch to against an f64 reference, for every type.

pub mod packed;
pub mod scalar;
#[cfg(all(
    target_arch = "wasm32",
    any(target_feature = "simd128", feature = "wasm-simd")
))]
mod wasm;
#[cfg(target_arch = "x86_64")]
mod x86;
// Only where a SIMD backend uses it.
#[cfg(any(
    target_arch = "x86_64",
    all(
        target_arch = "wasm32",
        any(target_feature = "simd128", feature = "wasm-simd")
    )
))]
mod tiles;

use crate::par::SharedMut;
use crate::quant::GgmlType;
pub use packed::{Acts, Format, PackedMat};

pub use crate::quant::QK;
pub use crate::testdata::test_data;

/// One token's quantized activations, borrowed (`x ≈ d[b] · q[32b + i]`).
#[derive(Debug, Clone, Copy)]
pub struct Q8Ref<'a> {
    /// Quantized values, `[-127, 127]`.
    pub q: &'a [i8],
    /// Scale per block.
    pub d: &'a [f32],
    /// Integer sum of each block's values (for weight minimums and offsets).
    pub isum: &'a [i32],
}

/// One token's activations quantized to blocks of 32, owned.
#[derive(Debug, Clone, Default)]
pub struct Q8Act {
    /// Quantized values, `[-127, 127]`.
    pub q: Vec<i8>,
    /// Scale per block.
    pub d: Vec<f32>,
    /// Integer sum of each block's values.
    pub isum: Vec<i32>,
}

impl Q8Act {
    /// Quantize `x` (a multiple of 32 long).
    pub fn quantize(&mut self, x: &[f32]) {
        let nb = x.len() / QK;
        self.q.resize(x.len(), 0);
        self.d.resize(nb, 0.0);
        self.isum.resize(nb, 0);
        let mut ds = vec![0f32; nb];
        crate::ops::quantize(x, &mut self.q, &mut self.d, &mut self.isum, &mut ds);
    }

    /// The borrowed view the kernels take.
    pub fn as_ref(&self) -> Q8Ref<'_> {
        Q8Ref {
            q: &self.q,
            d: &self.d,
            isum: &self.isum,
        }
    }
}

/// The instruction families this build can run, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tier {
    /// x86-64 with AVX-512 VNNI (+VL): `vpdpbusd` on 256-bit registers.
    Avx512Vnni,
    /// x86-64 with AVX-VNNI: the VEX-encoded `vpdpbusd`.
    AvxVnni,
    /// x86-64 with AVX2 and FMA: `vpmaddubsw` + `vpmaddwd`.
    Avx2,
    /// wasm relaxed SIMD: `i32x4.relaxed_dot_i8x16_i7x16_add`.
    WasmRelaxed,
    /// wasm simd128: `i32x4.dot_i16x8_s`.
    Wasm128,
    /// Portable integer code.
    Scalar,
}

impl Tier {
    /// A short name for tables and logs.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Avx512Vnni => "avx512-vnni",
            Tier::AvxVnni => "avx-vnni",
            Tier::Avx2 => "avx2",
            Tier::WasmRelaxed => "relaxed-simd",
            Tier::Wasm128 => "simd128",
            Tier::Scalar => "scalar",
        }
    }

    /// Rows per interleaved group for this tier (one accumulator register's lanes).
    pub fn group_rows(self) -> usize {
        match self {
            Tier::Avx512Vnni | Tier::AvxVnni | Tier::Avx2 => 8,
            Tier::WasmRelaxed | Tier::Wasm128 | Tier::Scalar => 4,
        }
    }
}

/// The best tier this build and CPU support (detected once).
pub fn best_tier() -> Tier {
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = x86::tier() {
        return t;
    }
    #[cfg(all(
        target_arch = "wasm32",
        any(target_feature = "relaxed-simd", feature = "wasm-relaxed-simd")
    ))]
    return Tier::WasmRelaxed;
    #[cfg(all(
        target_arch = "wasm32",
        any(target_feature = "simd128", feature = "wasm-simd")
    ))]
    #[allow(unreachable_code)]
    return Tier::Wasm128;
    #[allow(unreachable_code)]
    Tier::Scalar
}

/// Every tier this build and CPU can run (the tests compare them all).
#[allow(clippy::vec_init_then_push)] // the pushes depend on the target
pub fn available_tiers() -> Vec<Tier> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    v.extend(x86::tiers());
    #[cfg(all(
        target_arch = "wasm32",
        any(target_feature = "relaxed-simd", feature = "wasm-relaxed-simd")
    ))]
    v.push(Tier::WasmRelaxed);
    #[cfg(all(
        target_arch = "wasm32",
        any(target_feature = "simd128", feature = "wasm-simd")
    ))]
    v.push(Tier::Wasm128);
    v.push(Tier::Scalar);
    v
}

/// Which kernel family the engine runs on this CPU.
pub fn kernel_name() -> &'static str {
    best_tier().name()
}

/// `out[t·ld + row]` = row `row` of `m` · token `t` of `acts`, for the rows of groups
/// `g0..g1` (see [`PackedMat::groups`]), on `tier`'s kernels.
///
/// # Panics
/// If `out` is too short for `acts.n` tokens at stride `ld`, `ld < m.rows`, the group range
/// is out of bounds, `acts.k != m.cols`, or `m` was packed for another group width than
/// `tier`'s (and `tier` is not [`Tier::Scalar`]).
pub fn gemm(
    tier: Tier,
    m: &PackedMat,
    acts: &Acts,
    g0: usize,
    g1: usize,
    out: &mut [f32],
    ld: usize,
) {
    // SAFETY: `out` is borrowed exclusively for the call; one thread writes it.
    unsafe { gemm_shared(tier, m, acts, g0, g1, SharedMut::new(out), ld) }
}

/// [`gemm`] into a buffer other threads write other rows of.
///
/// # Safety
/// No other thread touches rows of groups `g0..g1` of `out` (any token) during the call, and
/// `out`'s buffer outlives it. Bounds are checked (panics as [`gemm`]).
pub(crate) unsafe fn gemm_shared(
    tier: Tier,
    m: &PackedMat,
    acts: &Acts,
    g0: usize,
    g1: usize,
    out: SharedMut,
    ld: usize,
) {
    assert!(acts.k == m.cols && g0 <= g1 && g1 <= m.groups() && ld >= m.rows);
    if acts.n == 0 || g0 == g1 {
        return;
    }
    assert!(out.len() >= (acts.n - 1) * ld + m.rows);
    if let Format::Raw(ty) = m.format {
        for row in g0..g1 {
            let w = m.raw_row(row);
            for t in 0..acts.n {
                let v = dot(ty, w, acts.x(t), &acts.token(t));
                // SAFETY: row `row` belongs to this call's groups (the caller's contract).
                unsafe { out.write_slice(t * ld + row, &[v]) };
            }
        }
        return;
    }
    // SAFETY (each arm): the caller's contract, passed on.
    match tier {
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512Vnni | Tier::AvxVnni | Tier::Avx2 if m.r == 8 => unsafe {
            x86::gemm(tier, m, acts, g0, g1, out, ld);
        },
        #[cfg(all(
            target_arch = "wasm32",
            any(target_feature = "simd128", feature = "wasm-simd")
        ))]
        Tier::WasmRelaxed | Tier::Wasm128 if m.r == 4 => unsafe {
            wasm::gemm(tier, m, acts, g0, g1, out, ld);
        },
        Tier::Scalar => unsafe { packed::gemm_scalar(m, acts, g0, g1, out, ld) },
        _ => panic!(
            "a matrix packed in groups of {} rows for the {} kernels",
            m.r,
            tier.name()
        ),
    }
}

/// `row · x` for one GGUF row of type `ty` (whole blocks) against the token's activations:
/// `x` in f32 (used by F32/F16 rows) and `xq` quantized (used by the integer kernels).
#[inline]
pub fn dot(ty: GgmlType, row: &[u8], x: &[f32], xq: &Q8Ref<'_>) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if x86::tier().is_some() {
        // SAFETY: AVX2 and FMA are present (every x86 tier has them; checked once).
        if let Some(v) = unsafe { x86::dot(ty, row, x, xq) } {
            return v;
        }
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
    xq: &Q8Ref<'_>,
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

/// Every supported type × awkward shapes (row counts that leave a partial group, 1–9
/// tokens so every tile width and remainder runs, one token over paired and single groups), each tier this build and CPU have against
/// the f64 reference; returns (tier and type, worst relative error). Run by the tests and by
/// the browser worker at start-up.
pub fn self_test() -> Result<Vec<(String, f64)>, String> {
    let mut out = Vec::new();
    for tier in available_tiers() {
        for ty in GgmlType::ALL {
            let worst = self_test_one(tier, ty)?;
            out.push((format!("{}/{}", tier.name(), ty.name()), worst));
        }
    }
    Ok(out)
}

fn self_test_one(tier: Tier, ty: GgmlType) -> Result<f64, String> {
    let mut worst = 0f64;
    for (rows, cols, n) in [
        (13usize, 256usize, 1usize),
        (20, 512, 1), // one token: whole groups in pairs (wasm relaxed), then a single one
        (8, 512, 4),
        (21, 768, 9),
        (4, 1536, 2),
        (9, 2304, 5),
        (3, 256, 3),
    ] {
        if cols % ty.block_elems() != 0 {
            continue;
        }
        let w = test_data(rows * cols, (rows * 31 + cols) as u32, 1.0);
        let mut data = Vec::new();
        for r in 0..rows {
            data.extend(crate::quant::quantize_row(ty, &w[r * cols..(r + 1) * cols]));
        }
        let x = test_data(n * cols, (n * 7 + cols) as u32, 3.0);
        let mut acts = Acts::default();
        acts.quantize(&x, cols);
        let packed = PackedMat::pack(ty, &data, rows, cols, tier.group_rows());
        // A matrix without −128 may take the 7-bit kernels: check the general ones too.
        let general = packed.i7.then(|| PackedMat {
            i7: false,
            ..packed.clone()
        });
        for m in std::iter::once(&packed).chain(general.as_ref()) {
            worst = worst.max(check_gemm(tier, ty, m, &data, &acts)?);
        }
    }
    Ok(worst)
}

/// [`gemm`] of `m` (packed from `data`) against the f64 reference, written at a stride
/// wider than the rows (the kernels must honour it); the worst relative error.
fn check_gemm(
    tier: Tier,
    ty: GgmlType,
    m: &PackedMat,
    data: &[u8],
    acts: &Acts,
) -> Result<f64, String> {
    let (rows, cols, n) = (m.rows, m.cols, acts.n);
    let ld = rows + 3;
    let mut worst = 0f64;
    let mut got = vec![f32::NAN; (n - 1) * ld + rows];
    gemm(tier, m, acts, 0, m.groups(), &mut got, ld);
    let float_x = matches!(ty, GgmlType::F32 | GgmlType::F16);
    let rb = ty.row_bytes(cols);
    for t in 0..n {
        for r in 0..rows {
            let (want, scale) = reference_dot(
                ty,
                &data[r * rb..(r + 1) * rb],
                acts.x(t),
                &acts.token(t),
                !float_x,
            );
            let g = f64::from(got[t * ld + r]);
            let err = (g - want).abs() / scale.max(1e-9);
            worst = worst.max(err);
            if err.is_nan() || err > 1e-5 {
                return Err(format!(
                    "{} kernel ({}) {rows}×{cols}, {n} tokens, row {r} token {t}: got {g}, f64 reference {want} (relative error {err:.2e})",
                    ty.name(),
                    tier.name()
                ));
            }
        }
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tier_matches_the_f64_reference_for_every_type() {
        let r = self_test().unwrap();
        assert_eq!(r.len(), GgmlType::ALL.len() * available_tiers().len());
        eprintln!("best tier {}: {r:?}", kernel_name());
    }

    #[test]
    fn scalar_row_kernel_matches_the_f64_reference_too() {
        for ty in GgmlType::ALL {
            let n = 512;
            let w = test_data(n, 3, 1.0);
            let x = test_data(n, 4, 2.0);
            let row = crate::quant::quantize_row(ty, &w);
            let mut xq = Q8Act::default();
            xq.quantize(&x);
            let fx = matches!(ty, GgmlType::F32 | GgmlType::F16);
            let (want, scale) = reference_dot(ty, &row, &x, &xq.as_ref(), !fx);
            let got = f64::from(scalar::dot(ty, &row, &x, &xq.as_ref()));
            assert!(
                (got - want).abs() / scale < 1e-5,
                "{}: {got} vs {want}",
                ty.name()
            );
        }
    }

    #[test]
    fn a_column_slice_computes_the_full_product_over_its_columns() {
        // The slice against its columns' activations equals, bit for bit, the whole matrix
        // against activations that are zero outside them (zero blocks add exact zeros).
        for tier in available_tiers() {
            for ty in GgmlType::ALL {
                let (rows, cols, n) = (13usize, 768usize, 3usize);
                let (c0, c1) = if ty.block_elems() > QK {
                    (256, 512)
                } else {
                    (64, 352)
                };
                let w = test_data(rows * cols, 17, 1.0);
                let mut data = Vec::new();
                for r in 0..rows {
                    data.extend(crate::quant::quantize_row(ty, &w[r * cols..(r + 1) * cols]));
                }
                let m = PackedMat::pack(ty, &data, rows, cols, tier.group_rows());
                let s = m.slice_cols(c0, c1);
                assert_eq!((s.rows, s.cols), (rows, c1 - c0));
                let x = test_data(n * cols, 23, 2.0);
                let mut padded = vec![0f32; n * cols];
                let mut part = Vec::new();
                for t in 0..n {
                    padded[t * cols + c0..t * cols + c1]
                        .copy_from_slice(&x[t * cols + c0..t * cols + c1]);
                    part.extend_from_slice(&x[t * cols + c0..t * cols + c1]);
                }
                let (mut full_acts, mut part_acts) = (Acts::default(), Acts::default());
                full_acts.quantize(&padded, cols);
                part_acts.quantize(&part, c1 - c0);
                let mut want = vec![0f32; n * rows];
                let mut got = vec![0f32; n * rows];
                gemm(tier, &m, &full_acts, 0, m.groups(), &mut want, rows);
                gemm(tier, &s, &part_acts, 0, s.groups(), &mut got, rows);
                assert_eq!(got, want, "{} on {}", ty.name(), tier.name());
                let (mut a, mut b) = (vec![0f32; cols], vec![0f32; c1 - c0]);
                m.dequantize_row(5, &mut a);
                s.dequantize_row(5, &mut b);
                assert_eq!(&a[c0..c1], &b[..], "{} row values", ty.name());
            }
        }
    }

    #[test]
    fn packed_rows_dequantize_like_the_gguf_rows() {
        for ty in GgmlType::ALL {
            let (rows, cols) = (11, 512);
            let w = test_data(rows * cols, 5, 1.0);
            let mut data = Vec::new();
            for r in 0..rows {
                data.extend(crate::quant::quantize_row(ty, &w[r * cols..(r + 1) * cols]));
            }
            let m = PackedMat::pack(ty, &data, rows, cols, 8);
            let rb = ty.row_bytes(cols);
            for r in 0..rows {
                let mut a = vec![0f32; cols];
                let mut b = vec![0f32; cols];
                crate::quant::dequantize_row(ty, &data[r * rb..(r + 1) * rb], &mut a);
                m.dequantize_row(r, &mut b);
                assert_eq!(a, b, "{} row {r}", ty.name());
            }
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
