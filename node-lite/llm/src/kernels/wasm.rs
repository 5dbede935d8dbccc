//! wasm simd128 kernels (compiled when the module is built with `+simd128`): weights and
//! activations widened to i16 lanes, `i32x4.dot_i16x8_s` sums pairs into i32 lanes, f32 scales
//! per block. Types without a SIMD kernel here fall back to the scalar one.

use core::arch::wasm32::*;

use super::{Q8Act, QK};
use crate::quant::{GgmlType, f16_at};

/// Σ of 16 unsigned `w` bytes × 16 signed `x` bytes, as 4 i32 lanes.
#[inline]
fn mul16(w: v128, x: v128, w_signed: bool) -> v128 {
    let (wl, wh) = if w_signed {
        (i16x8_extend_low_i8x16(w), i16x8_extend_high_i8x16(w))
    } else {
        (u16x8_extend_low_u8x16(w), u16x8_extend_high_u8x16(w))
    };
    let xl = i16x8_extend_low_i8x16(x);
    let xh = i16x8_extend_high_i8x16(x);
    i32x4_add(i32x4_dot_i16x8(wl, xl), i32x4_dot_i16x8(wh, xh))
}

#[inline]
fn hsum_i32(v: v128) -> i32 {
    i32x4_extract_lane::<0>(v)
        + i32x4_extract_lane::<1>(v)
        + i32x4_extract_lane::<2>(v)
        + i32x4_extract_lane::<3>(v)
}

/// The kernel for `ty`, or `None` where the scalar one is used.
pub(super) fn dot(ty: GgmlType, row: &[u8], _x: &[f32], xq: &Q8Act) -> Option<f32> {
    let nb = row.len() / ty.block_bytes();
    if !matches!(ty, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1)
        || xq.d.len() < nb
        || xq.q.len() < nb * QK
    {
        return None;
    }
    // Unaligned 16-byte loads; every index below is inside `row` / `xq.q` (lengths checked
    // above, blocks come from `chunks_exact`).
    let ld = |s: &[u8], i: usize| -> v128 {
        assert!(i + 16 <= s.len());
        // SAFETY: 16 bytes at `i` are in bounds (asserted); wasm loads need no alignment.
        unsafe { v128_load(s.as_ptr().add(i).cast()) }
    };
    let lda = |b: usize, half: usize| -> v128 {
        let i = b * QK + 16 * half;
        assert!(i + 16 <= xq.q.len());
        // SAFETY: as above.
        unsafe { v128_load(xq.q.as_ptr().add(i).cast()) }
    };
    let mut acc = 0f32;
    match ty {
        GgmlType::Q8_0 => {
            for (b, blk) in row.chunks_exact(34).enumerate() {
                let s = i32x4_add(
                    mul16(ld(blk, 2), lda(b, 0), true),
                    mul16(ld(blk, 18), lda(b, 1), true),
                );
                acc += f16_at(blk, 0) * xq.d[b] * hsum_i32(s) as f32;
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let off = if ty == GgmlType::Q4_1 { 4 } else { 2 };
            let mask = u8x16_splat(0x0F);
            for (b, blk) in row.chunks_exact(ty.block_bytes()).enumerate() {
                let q = ld(blk, off);
                let lo = v128_and(q, mask);
                let hi = u8x16_shr(q, 4);
                let s = hsum_i32(i32x4_add(
                    mul16(lo, lda(b, 0), false),
                    mul16(hi, lda(b, 1), false),
                ));
                let d = f16_at(blk, 0) * xq.d[b];
                if ty == GgmlType::Q4_1 {
                    acc += d * s as f32 + f16_at(blk, 2) * xq.d[b] * xq.isum[b] as f32;
                } else {
                    acc += d * (s - 8 * xq.isum[b]) as f32;
                }
            }
        }
        _ => return None,
    }
    Some(acc)
}
