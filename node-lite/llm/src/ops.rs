//! The forward pass's f32 element-wise work and attention, written to vectorise (no libm
//! calls or bounds checks in the inner loops) and compiled again for AVX2+FMA / AVX-512 on
//! x86-64 and with `simd128` in wasm ([`shoal_math::multiversion!`]).

use shoal_math::{dot8, exp, sum8};

use crate::quant::QK;

#[inline(always)]
fn quantize_block(xs: &[f32; QK], qs: &mut [i8; QK]) -> (f32, i32) {
    let mut m = [0f32; 8];
    for c in 0..QK / 8 {
        for l in 0..8 {
            let a = xs[8 * c + l].abs();
            // A select, not `f32::max` (its NaN rule blocks vectorisation in wasm).
            m[l] = if m[l] < a { a } else { m[l] };
        }
    }
    let amax = m.iter().fold(0f32, |a, &b| if a < b { b } else { a });
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    // 1.5·2²³: adding it rounds |x| < 2²² to an integer (nearest, ties to even — as ggml's
    // x86 quantizer) held in the low mantissa bits; no saturating float→int conversion
    // (which does not vectorise). |v·id| ≤ 127 here.
    const ROUND: f32 = 12_582_912.0;
    let mut r = [0i32; QK];
    for i in 0..QK {
        r[i] = ((xs[i] * id + ROUND).to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    }
    let mut s = [0i32; 8];
    for c in 0..QK / 8 {
        for l in 0..8 {
            s[l] += r[8 * c + l];
        }
    }
    for i in 0..QK {
        qs[i] = r[i].clamp(-128, 127) as i8; // a no-op clamp that lets LLVM narrow with packs
    }
    (d, s.iter().sum())
}

#[inline(always)]
fn quantize_generic(x: &[f32], q: &mut [i8], d: &mut [f32], isum: &mut [i32], ds: &mut [f32]) {
    for (((xs, qs), (d, is)), ds) in x
        .chunks_exact(QK)
        .zip(q.chunks_exact_mut(QK))
        .zip(d.iter_mut().zip(isum.iter_mut()))
        .zip(ds.iter_mut())
    {
        let (Ok(xs), Ok(qs)) = (<&[f32; QK]>::try_from(xs), <&mut [i8; QK]>::try_from(qs)) else {
            continue; // chunks_exact: never
        };
        let (dd, s) = quantize_block(xs, qs);
        *d = dd;
        *is = s;
        *ds = dd * s as f32;
    }
}

shoal_math::multiversion! {
    fn quantize_portable(x: &[f32], q: &mut [i8], d: &mut [f32], isum: &mut [i32], ds: &mut [f32]) => quantize_generic
}

/// Quantize `x` (whole blocks of 32) to signed bytes in `[-127, 127]` with one scale per
/// block `d`, the blocks' integer sums `isum` and `ds = d · isum` (nearest, ties to even).
///
/// # Panics
/// If `q` is shorter than `x` or the per-block outputs shorter than `x.len() / 32`.
pub fn quantize(x: &[f32], q: &mut [i8], d: &mut [f32], isum: &mut [i32], ds: &mut [f32]) {
    let nb = x.len() / QK;
    assert!(q.len() >= nb * QK && d.len() >= nb && isum.len() >= nb && ds.len() >= nb);
    #[cfg(target_arch = "x86_64")]
    if shoal_math::has_avx2_fma() {
        for b in 0..nb {
            // SAFETY: AVX2 is present; block b's 32 inputs and outputs are in bounds.
            let (dd, s) =
                unsafe { x86::quantize_block(x.as_ptr().add(b * QK), q.as_mut_ptr().add(b * QK)) };
            d[b] = dd;
            isum[b] = s;
            ds[b] = dd * s as f32;
        }
        return;
    }
    #[cfg(all(target_arch = "wasm32", feature = "wasm-simd"))]
    {
        for b in 0..nb {
            // SAFETY: the module carries simd128; block b's 32 inputs and outputs are in bounds.
            let (dd, s) =
                unsafe { wasm::quantize_block(x.as_ptr().add(b * QK), q.as_mut_ptr().add(b * QK)) };
            d[b] = dd;
            isum[b] = s;
            ds[b] = dd * s as f32;
        }
        return;
    }
    #[allow(unreachable_code)]
    quantize_portable(x, q, d, isum, ds);
}

#[inline(always)]
fn rmsnorm_generic(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ss = dot8(x, x) / x.len() as f32;
    let r = 1.0 / (ss + eps).sqrt();
    for ((o, &a), &b) in out.iter_mut().zip(x).zip(w) {
        *o = a * r * b;
    }
}

shoal_math::multiversion! {
    /// `out = x / rms(x) · w`.
    pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) => rmsnorm_generic
}

#[inline(always)]
fn silu_mul_generic(g: &mut [f32], u: &[f32]) {
    for (a, &b) in g.iter_mut().zip(u) {
        *a = *a / (1.0 + exp(-*a)) * b;
    }
}

shoal_math::multiversion! {
    /// `g ← silu(g) · u` (SwiGLU).
    pub fn silu_mul(g: &mut [f32], u: &[f32]) => silu_mul_generic
}

#[inline(always)]
fn add_generic(a: &mut [f32], b: &[f32]) {
    for (x, &y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

shoal_math::multiversion! {
    /// `a += b` (element-wise, over the shorter of the two).
    pub fn add(a: &mut [f32], b: &[f32]) => add_generic
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_generic(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    stride: usize,
    len: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hd = q.len();
    let scores = &mut scores[..len];
    let mut mx = f32::NEG_INFINITY;
    for (sc, k) in scores.iter_mut().zip(keys.chunks(stride)) {
        let s = dot8(q, &k[..hd]) * scale;
        mx = if mx < s { s } else { mx };
        *sc = s;
    }
    for sc in scores.iter_mut() {
        *sc = exp(*sc - mx);
    }
    let inv = 1.0 / sum8(scores);
    out.fill(0.0);
    for (&p, v) in scores.iter().zip(values.chunks(stride)) {
        let p = p * inv;
        for (o, &x) in out.iter_mut().zip(&v[..hd]) {
            *o += p * x;
        }
    }
}

shoal_math::multiversion! {
    #[allow(clippy::too_many_arguments)]
    fn attend_portable(
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        stride: usize,
        len: usize,
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
    ) => attend_generic
}

#[inline(always)]
fn softmax_in_place_generic(scores: &mut [f32]) {
    let mut m8 = [f32::NEG_INFINITY; 8];
    let mut chunks = scores.chunks_exact(8);
    for c in &mut chunks {
        for (m, &v) in m8.iter_mut().zip(c) {
            *m = if *m < v { v } else { *m };
        }
    }
    let mx = chunks
        .remainder()
        .iter()
        .chain(&m8)
        .fold(f32::NEG_INFINITY, |a, &b| if a < b { b } else { a });
    for sc in scores.iter_mut() {
        *sc = exp(*sc - mx);
    }
    let inv = 1.0 / sum8(scores);
    for sc in scores.iter_mut() {
        *sc *= inv;
    }
}

shoal_math::multiversion! {
    /// `softmax` of one row, in place.
    pub fn softmax_in_place(scores: &mut [f32]) => softmax_in_place_generic
}

/// One head's attention over `len` cached positions: `keys`/`values` start at this head's
/// slice of position 0 and step `stride` floats per position; `scores` has room for `len`;
/// `out` (the head width, = `q.len()`) receives `softmax(q·Kᵀ·scale)·V`.
///
/// x86 with AVX2+FMA and wasm with simd128 run hand-tiled kernels (8 keys per dot-product
/// step, the output held in registers while the values stream); other widths and targets the
/// portable one.
///
/// # Panics
/// If a slice is shorter than `len` positions need.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    stride: usize,
    len: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hd = q.len();
    assert!(len > 0 && hd <= stride && out.len() == hd && scores.len() >= len);
    let need = (len - 1) * stride + hd;
    assert!(keys.len() >= need && values.len() >= need);
    #[cfg(target_arch = "x86_64")]
    if hd.is_multiple_of(8) && shoal_math::has_avx2_fma() {
        // SAFETY: AVX2 and FMA are present; every position's `hd` values lie inside `keys`
        // and `values` (asserted above), `scores` holds `len`, `out` holds `hd`.
        unsafe {
            x86::scores(q, keys.as_ptr(), stride, len, scale, scores);
            softmax_in_place(&mut scores[..len]);
            x86::weighted_sum(&scores[..len], values.as_ptr(), stride, out);
        }
        return;
    }
    #[cfg(all(target_arch = "wasm32", feature = "wasm-simd"))]
    if hd.is_multiple_of(4) {
        // SAFETY: as above; the module carries simd128 (feature `wasm-simd`).
        unsafe {
            wasm::scores(q, keys.as_ptr(), stride, len, scale, scores);
            softmax_in_place(&mut scores[..len]);
            wasm::weighted_sum(&scores[..len], values.as_ptr(), stride, out);
        }
        return;
    }
    attend_portable(q, keys, values, stride, len, scale, scores, out);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// One block of 32: scale, bytes (rounded by `cvtps2dq`: nearest, ties to even) and sum.
    ///
    /// # Safety
    /// AVX2; 32 readable floats at `x`, 32 writable bytes at `q`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn quantize_block(x: *const f32, q: *mut i8) -> (f32, i32) {
        // SAFETY: the caller's contract.
        unsafe {
            let v = [
                _mm256_loadu_ps(x),
                _mm256_loadu_ps(x.add(8)),
                _mm256_loadu_ps(x.add(16)),
                _mm256_loadu_ps(x.add(24)),
            ];
            let sign = _mm256_set1_ps(-0.0);
            let mut m = _mm256_andnot_ps(sign, v[0]);
            for vi in &v[1..] {
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vi));
            }
            let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
            let d = amax / 127.0;
            let id = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
            let r = v.map(|vi| _mm256_cvtps_epi32(_mm256_mul_ps(vi, id)));
            let sum = _mm256_add_epi32(_mm256_add_epi32(r[0], r[1]), _mm256_add_epi32(r[2], r[3]));
            let s4 = _mm_add_epi32(
                _mm256_castsi256_si128(sum),
                _mm256_extracti128_si256::<1>(sum),
            );
            let s4 = _mm_add_epi32(s4, _mm_shuffle_epi32::<0b01_00_11_10>(s4));
            let s = _mm_cvtsi128_si32(_mm_add_epi32(s4, _mm_shuffle_epi32::<0b10_11_00_01>(s4)));
            // i32 → i16 → i8 with saturating packs (values are within ±127), which work per
            // 128-bit half; a final permute puts the four 8-byte groups back in order.
            let p16a = _mm256_packs_epi32(r[0], r[1]);
            let p16b = _mm256_packs_epi32(r[2], r[3]);
            let p8 = _mm256_packs_epi16(p16a, p16b);
            let fix = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            _mm256_storeu_si256(q.cast(), _mm256_permutevar8x32_epi32(p8, fix));
            (d, s)
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    /// `scores[j] = q·k_j · scale`, eight keys at a time (eight independent FMA chains).
    ///
    /// # Safety
    /// AVX2+FMA; `q.len()` a multiple of 8; `keys` covers `len` positions `stride` apart.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores(
        q: &[f32],
        keys: *const f32,
        stride: usize,
        len: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        let nv = q.len() / 8;
        let qp = q.as_ptr();
        let mut j = 0;
        // SAFETY (all loads): position j + u < len, lane offset 8v + 8 ≤ hd.
        unsafe {
            while j + 8 <= len {
                let mut a = [_mm256_setzero_ps(); 8];
                for v in 0..nv {
                    let qv = _mm256_loadu_ps(qp.add(8 * v));
                    for (u, acc) in a.iter_mut().enumerate() {
                        let k = _mm256_loadu_ps(keys.add((j + u) * stride + 8 * v));
                        *acc = _mm256_fmadd_ps(qv, k, *acc);
                    }
                }
                for (u, acc) in a.iter().enumerate() {
                    scores[j + u] = hsum(*acc) * scale;
                }
                j += 8;
            }
            while j < len {
                let mut acc = _mm256_setzero_ps();
                for v in 0..nv {
                    let k = _mm256_loadu_ps(keys.add(j * stride + 8 * v));
                    acc = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(8 * v)), k, acc);
                }
                scores[j] = hsum(acc) * scale;
                j += 1;
            }
        }
    }

    /// `out = Σ_j p_j · v_j`, 64 output values held in eight registers per pass.
    ///
    /// # Safety
    /// AVX2+FMA; `out.len()` a multiple of 8; `values` covers `p.len()` positions.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weighted_sum(
        p: &[f32],
        values: *const f32,
        stride: usize,
        out: &mut [f32],
    ) {
        let hd = out.len();
        let mut c = 0;
        // SAFETY (all accesses): lane offsets c + 8v + 8 ≤ hd within each position < p.len().
        unsafe {
            while c < hd {
                let w = (hd - c).min(64) / 8;
                let mut acc = [_mm256_setzero_ps(); 8];
                for (j, &pj) in p.iter().enumerate() {
                    let pv = _mm256_set1_ps(pj);
                    let row = values.add(j * stride + c);
                    for (v, a) in acc.iter_mut().enumerate().take(w) {
                        *a = _mm256_fmadd_ps(pv, _mm256_loadu_ps(row.add(8 * v)), *a);
                    }
                }
                for (v, a) in acc.iter().enumerate().take(w) {
                    _mm256_storeu_ps(out.as_mut_ptr().add(c + 8 * v), *a);
                }
                c += 8 * w;
            }
        }
    }
}

#[cfg(all(target_arch = "wasm32", feature = "wasm-simd"))]
mod wasm {
    use core::arch::wasm32::*;

    /// One block of 32: scale, bytes (nearest, ties to even) and sum.
    ///
    /// # Safety
    /// 32 readable floats at `x`, 32 writable bytes at `q`.
    #[target_feature(enable = "simd128")]
    pub(super) unsafe fn quantize_block(x: *const f32, q: *mut i8) -> (f32, i32) {
        // SAFETY: the caller's contract.
        unsafe {
            let v: [v128; 8] = core::array::from_fn(|i| v128_load(x.add(4 * i).cast()));
            let mut m = f32x4_abs(v[0]);
            for vi in &v[1..] {
                m = f32x4_pmax(m, f32x4_abs(*vi));
            }
            let amax = f32x4_extract_lane::<0>(m)
                .max(f32x4_extract_lane::<1>(m))
                .max(f32x4_extract_lane::<2>(m))
                .max(f32x4_extract_lane::<3>(m));
            let d = amax / 127.0;
            let id = f32x4_splat(if d > 0.0 { 1.0 / d } else { 0.0 });
            let r = v.map(|vi| i32x4_trunc_sat_f32x4(f32x4_nearest(f32x4_mul(vi, id))));
            let mut sum = r[0];
            for ri in &r[1..] {
                sum = i32x4_add(sum, *ri);
            }
            let s = i32x4_extract_lane::<0>(sum)
                + i32x4_extract_lane::<1>(sum)
                + i32x4_extract_lane::<2>(sum)
                + i32x4_extract_lane::<3>(sum);
            let lo = i8x16_narrow_i16x8(
                i16x8_narrow_i32x4(r[0], r[1]),
                i16x8_narrow_i32x4(r[2], r[3]),
            );
            let hi = i8x16_narrow_i16x8(
                i16x8_narrow_i32x4(r[4], r[5]),
                i16x8_narrow_i32x4(r[6], r[7]),
            );
            v128_store(q.cast(), lo);
            v128_store(q.add(16).cast(), hi);
            (d, s)
        }
    }

    #[inline]
    #[target_feature(enable = "simd128")]
    fn hsum(v: v128) -> f32 {
        f32x4_extract_lane::<0>(v)
            + f32x4_extract_lane::<1>(v)
            + f32x4_extract_lane::<2>(v)
            + f32x4_extract_lane::<3>(v)
    }

    /// As the x86 `scores`, four lanes per register.
    ///
    /// # Safety
    /// `q.len()` a multiple of 4; `keys` covers `len` positions `stride` apart.
    #[target_feature(enable = "simd128")]
    pub(super) unsafe fn scores(
        q: &[f32],
        keys: *const f32,
        stride: usize,
        len: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        let nv = q.len() / 4;
        let qp = q.as_ptr();
        let mut j = 0;
        // SAFETY (all loads): position j + u < len, lane offset 4v + 4 ≤ hd.
        unsafe {
            while j + 8 <= len {
                let mut a = [f32x4_splat(0.0); 8];
                for v in 0..nv {
                    let qv = v128_load(qp.add(4 * v).cast());
                    for (u, acc) in a.iter_mut().enumerate() {
                        let k = v128_load(keys.add((j + u) * stride + 4 * v).cast());
                        *acc = f32x4_add(*acc, f32x4_mul(qv, k));
                    }
                }
                for (u, acc) in a.iter().enumerate() {
                    scores[j + u] = hsum(*acc) * scale;
                }
                j += 8;
            }
            while j < len {
                let mut acc = f32x4_splat(0.0);
                for v in 0..nv {
                    let k = v128_load(keys.add(j * stride + 4 * v).cast());
                    acc = f32x4_add(acc, f32x4_mul(v128_load(qp.add(4 * v).cast()), k));
                }
                scores[j] = hsum(acc) * scale;
                j += 1;
            }
        }
    }

    /// As the x86 `weighted_sum`: 32 output values in eight registers per pass.
    ///
    /// # Safety
    /// `out.len()` a multiple of 4; `values` covers `p.len()` positions.
    #[target_feature(enable = "simd128")]
    pub(super) unsafe fn weighted_sum(
        p: &[f32],
        values: *const f32,
        stride: usize,
        out: &mut [f32],
    ) {
        let hd = out.len();
        let mut c = 0;
        // SAFETY (all accesses): lane offsets c + 4v + 4 ≤ hd within each position < p.len().
        unsafe {
            while c < hd {
                let w = (hd - c).min(32) / 4;
                let mut acc = [f32x4_splat(0.0); 8];
                for (j, &pj) in p.iter().enumerate() {
                    let pv = f32x4_splat(pj);
                    let row = values.add(j * stride + c);
                    for (v, a) in acc.iter_mut().enumerate().take(w) {
                        *a = f32x4_add(*a, f32x4_mul(pv, v128_load(row.add(4 * v).cast())));
                    }
                }
                for (v, a) in acc.iter().enumerate().take(w) {
                    v128_store(out.as_mut_ptr().add(c + 4 * v).cast(), *a);
                }
                c += 4 * w;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::test_data;

    #[test]
    fn attention_equals_the_f64_definition() {
        let (hd, stride, len) = (64, 192, 37);
        let q = test_data(hd, 1, 1.0);
        let k = test_data(stride * len, 2, 1.0);
        let v = test_data(stride * len, 3, 1.0);
        let off = 64; // the second head of three
        let mut scores = vec![0f32; len];
        let mut out = vec![0f32; hd];
        attend(
            &q,
            &k[off..],
            &v[off..],
            stride,
            len,
            0.125,
            &mut scores,
            &mut out,
        );
        let s: Vec<f64> = (0..len)
            .map(|j| {
                (0..hd)
                    .map(|i| f64::from(q[i]) * f64::from(k[j * stride + off + i]))
                    .sum::<f64>()
                    * 0.125
            })
            .collect();
        let mx = s.iter().copied().fold(f64::MIN, f64::max);
        let z: f64 = s.iter().map(|x| (x - mx).exp()).sum();
        for i in 0..hd {
            let want: f64 = (0..len)
                .map(|j| (s[j] - mx).exp() / z * f64::from(v[j * stride + off + i]))
                .sum();
            assert!(
                (f64::from(out[i]) - want).abs() < 1e-5,
                "{i}: {} vs {want}",
                out[i]
            );
        }
    }

    #[test]
    fn tiled_attention_equals_the_portable_one() {
        for (hd, stride, len) in [
            (64, 192, 1),
            (64, 192, 8),
            (64, 576, 37),
            (128, 256, 19),
            (32, 96, 9),
        ] {
            let q = test_data(hd, 5, 1.0);
            let k = test_data(stride * len, 6, 2.0);
            let v = test_data(stride * len, 7, 1.0);
            let off = stride - hd;
            let (mut s1, mut s2) = (vec![0f32; len], vec![0f32; len]);
            let (mut o1, mut o2) = (vec![0f32; hd], vec![0f32; hd]);
            attend(&q, &k[off..], &v[off..], stride, len, 0.3, &mut s1, &mut o1);
            attend_portable(&q, &k[off..], &v[off..], stride, len, 0.3, &mut s2, &mut o2);
            for (a, b) in o1.iter().zip(&o2) {
                assert!((a - b).abs() < 1e-5, "hd {hd} len {len}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn quantize_is_within_half_a_step_and_sums_match() {
        let x = test_data(96, 9, 5.0);
        let (mut q, mut d, mut is, mut ds) =
            (vec![0i8; 96], vec![0f32; 3], vec![0; 3], vec![0f32; 3]);
        quantize(&x, &mut q, &mut d, &mut is, &mut ds);
        let (mut q2, mut d2, mut is2, mut ds2) =
            (vec![0i8; 96], vec![0f32; 3], vec![0; 3], vec![0f32; 3]);
        quantize_portable(&x, &mut q2, &mut d2, &mut is2, &mut ds2);
        assert_eq!(
            (&q, &d, &is),
            (&q2, &d2, &is2),
            "SIMD and portable quantizers agree"
        );
        for (i, &v) in x.iter().enumerate() {
            assert!((f32::from(q[i]) * d[i / QK] - v).abs() <= d[i / QK] * 0.5 + 1e-6);
        }
        for b in 0..3 {
            let s: i32 = q[b * QK..(b + 1) * QK].iter().map(|&v| i32::from(v)).sum();
            assert_eq!(s, is[b]);
            assert_eq!(ds[b], d[b] * s as f32);
        }
    }

    #[test]
    fn silu_rmsnorm_add() {
        let mut g = vec![-2.0f32, 0.0, 1.5, 30.0];
        let u = vec![1.0f32, 2.0, -1.0, 0.5];
        silu_mul(&mut g, &u);
        let want = |x: f64, y: f64| x / (1.0 + (-x).exp()) * y;
        for (i, (&a, &b)) in [-2.0f64, 0.0, 1.5, 30.0]
            .iter()
            .zip(&[1.0, 2.0, -1.0, 0.5])
            .enumerate()
        {
            assert!((f64::from(g[i]) - want(a, b)).abs() < 1e-5);
        }
        let x = vec![3.0f32, 4.0];
        let mut o = vec![0f32; 2];
        rmsnorm(&x, &[1.0, 2.0], 0.0, &mut o);
        let r = (12.5f32).sqrt();
        assert!((o[0] - 3.0 / r).abs() < 1e-6 && (o[1] - 8.0 / r).abs() < 1e-6);
        let mut a = vec![1.0f32; 3];
        add(&mut a, &[1.0, 2.0, 3.0]);
        assert_eq!(a, vec![2.0, 3.0, 4.0]);
    }
}
