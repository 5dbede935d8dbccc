//! AVX2 + FMA kernels (x86-64), picked at run time.
//!
//! Per block of 32: the weights become 32 bytes in a register (nibbles unpacked with a shift
//! and a mask), `vpmaddubsw` multiplies unsigned weight bytes by signed activation bytes into
//! 16 pairs of i16 (no saturation: |15·127·2| < 2¹⁵; for signed Q8_0 weights the sign is moved
//! onto the activation first, |127·127·2| < 2¹⁵), `vpmaddwd` by ones sums them into 8 × i32,
//! which is converted and accumulated with the block's f32 scale by one FMA. One horizontal
//! sum per row.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::{Q8Act, QK};
use crate::quant::{GgmlType, f16_at, q4k_scale_min};

/// Whether AVX2 and FMA are present (checked once).
pub(super) fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// 16 bytes of nibbles → 32 bytes: low nibbles (weights 0–15) then high (16–31).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes at `p`.
    let t = unsafe { _mm_loadu_si128(p.cast()) };
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(t), t);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Σ over 32 pairs of unsigned `w` bytes × signed `a` bytes, as 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn mul_u8_i8(w: __m256i, a: __m256i) -> __m256i {
    let p16 = _mm256_maddubs_epi16(w, a);
    _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
}

/// The kernel for `ty`, or `None` where the scalar one is used.
///
/// # Safety
/// AVX2 and FMA must be available ([`available`]); `row` holds whole blocks and `xq` at least
/// as many activation blocks.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot(ty: GgmlType, row: &[u8], _x: &[f32], xq: &Q8Act) -> Option<f32> {
    let nb = row.len() / ty.block_bytes();
    let need = match ty {
        GgmlType::Q4K => nb * 8,
        _ => nb,
    };
    if xq.d.len() < need || xq.q.len() < need * QK {
        return None;
    }
    let a = xq.q.as_ptr();
    // SAFETY (all arms): block `b` of `row` spans `b*bb..(b+1)*bb` < row.len(); activation
    // block `b` spans `b*32..(b+1)*32` <= xq.q.len() (checked above).
    unsafe {
        match ty {
            GgmlType::Q8_0 => {
                let mut acc = _mm256_setzero_ps();
                for (b, blk) in row.chunks_exact(34).enumerate() {
                    let w = _mm256_loadu_si256(blk.as_ptr().add(2).cast());
                    let x = _mm256_loadu_si256(a.add(b * QK).cast());
                    let aw = _mm256_sign_epi8(w, w);
                    let sx = _mm256_sign_epi8(x, w);
                    let s = _mm256_cvtepi32_ps(mul_u8_i8(aw, sx));
                    let d = _mm256_set1_ps(f16_at(blk, 0) * xq.d[b]);
                    acc = _mm256_fmadd_ps(d, s, acc);
                }
                Some(hsum(acc))
            }
            GgmlType::Q4_1 => {
                let mut acc = _mm256_setzero_ps();
                let mut mins = 0f32;
                for (b, blk) in row.chunks_exact(20).enumerate() {
                    let w = nibbles(blk.as_ptr().add(4));
                    let x = _mm256_loadu_si256(a.add(b * QK).cast());
                    let s = _mm256_cvtepi32_ps(mul_u8_i8(w, x));
                    let dx = xq.d[b];
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(blk, 0) * dx), s, acc);
                    mins += f16_at(blk, 2) * dx * xq.isum[b] as f32;
                }
                Some(hsum(acc) + mins)
            }
            GgmlType::Q4_0 => {
                let mut acc = _mm256_setzero_ps();
                let mut off = 0f32;
                for (b, blk) in row.chunks_exact(18).enumerate() {
                    let w = nibbles(blk.as_ptr().add(2));
                    let x = _mm256_loadu_si256(a.add(b * QK).cast());
                    let s = _mm256_cvtepi32_ps(mul_u8_i8(w, x));
                    let d = f16_at(blk, 0) * xq.d[b];
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), s, acc);
                    off += d * (8 * xq.isum[b]) as f32;
                }
                Some(hsum(acc) - off)
            }
            GgmlType::Q4K => {
                let mut acc = _mm256_setzero_ps();
                let mut mins = 0f32;
                let mask = _mm256_set1_epi8(0x0F);
                for (sb, blk) in row.chunks_exact(144).enumerate() {
                    let d = f16_at(blk, 0);
                    let dmin = f16_at(blk, 2);
                    let scales = &blk[4..16];
                    for g in 0..4 {
                        let q = _mm256_loadu_si256(blk.as_ptr().add(16 + 32 * g).cast());
                        let lo = _mm256_and_si256(q, mask);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask);
                        let ab = sb * 8 + 2 * g;
                        let x0 = _mm256_loadu_si256(a.add(ab * QK).cast());
                        let x1 = _mm256_loadu_si256(a.add((ab + 1) * QK).cast());
                        let (s1, m1) = q4k_scale_min(2 * g, scales);
                        let (s2, m2) = q4k_scale_min(2 * g + 1, scales);
                        let p0 = _mm256_cvtepi32_ps(mul_u8_i8(lo, x0));
                        let p1 = _mm256_cvtepi32_ps(mul_u8_i8(hi, x1));
                        acc =
                            _mm256_fmadd_ps(_mm256_set1_ps(d * f32::from(s1) * xq.d[ab]), p0, acc);
                        acc = _mm256_fmadd_ps(
                            _mm256_set1_ps(d * f32::from(s2) * xq.d[ab + 1]),
                            p1,
                            acc,
                        );
                        mins += dmin
                            * (f32::from(m1) * xq.d[ab] * xq.isum[ab] as f32
                                + f32::from(m2) * xq.d[ab + 1] * xq.isum[ab + 1] as f32);
                    }
                }
                Some(hsum(acc) - mins)
            }
            _ => None,
        }
    }
}
