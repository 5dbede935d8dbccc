//! Portable kernels: integer inner products per block, f32 scales. The SIMD kernels must
//! agree with these (up to f32 summation order).

use super::{Q8Ref, QK};
use crate::quant::{GgmlType, f16_at, q4k_scale_min};

/// `row · x` (see [`super::dot`]).
pub fn dot(ty: GgmlType, row: &[u8], x: &[f32], xq: &Q8Ref<'_>) -> f32 {
    match ty {
        GgmlType::F32 => row
            .chunks_exact(4)
            .zip(x)
            .map(|(b, &v)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * v)
            .sum(),
        GgmlType::F16 => row
            .chunks_exact(2)
            .zip(x)
            .map(|(b, &v)| f16_at(b, 0) * v)
            .sum(),
        GgmlType::Q8_0 => {
            let mut acc = 0f32;
            for (b, blk) in row.chunks_exact(34).enumerate() {
                let q = &xq.q[b * QK..(b + 1) * QK];
                let s: i32 = blk[2..34]
                    .iter()
                    .zip(q)
                    .map(|(&w, &a)| i32::from(w as i8) * i32::from(a))
                    .sum();
                acc += f16_at(blk, 0) * xq.d[b] * s as f32;
            }
            acc
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let bb = ty.block_bytes();
            let off = if ty == GgmlType::Q4_1 { 4 } else { 2 };
            let mut acc = 0f32;
            for (b, blk) in row.chunks_exact(bb).enumerate() {
                let q = &xq.q[b * QK..(b + 1) * QK];
                let mut s = 0i32;
                for j in 0..16 {
                    let w = blk[off + j];
                    s += i32::from(w & 0xF) * i32::from(q[j]);
                    s += i32::from(w >> 4) * i32::from(q[j + 16]);
                }
                let d = f16_at(blk, 0) * xq.d[b];
                if ty == GgmlType::Q4_1 {
                    acc += d * s as f32 + f16_at(blk, 2) * xq.d[b] * xq.isum[b] as f32;
                } else {
                    acc += d * (s - 8 * xq.isum[b]) as f32;
                }
            }
            acc
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let bb = ty.block_bytes();
            let mut acc = 0f32;
            for (b, blk) in row.chunks_exact(bb).enumerate() {
                let q = &xq.q[b * QK..(b + 1) * QK];
                let w = crate::quant::q5_values(ty, blk);
                let s: i32 = w
                    .iter()
                    .zip(q)
                    .map(|(&w, &a)| i32::from(w) * i32::from(a))
                    .sum();
                let d = f16_at(blk, 0) * xq.d[b];
                if ty == GgmlType::Q5_1 {
                    acc += d * s as f32 + f16_at(blk, 2) * xq.d[b] * xq.isum[b] as f32;
                } else {
                    acc += d * (s - 16 * xq.isum[b]) as f32;
                }
            }
            acc
        }
        GgmlType::Q4K => {
            let mut acc = 0f32;
            for (sb, blk) in row.chunks_exact(144).enumerate() {
                let d = f16_at(blk, 0);
                let dmin = f16_at(blk, 2);
                let scales = &blk[4..16];
                let qs = &blk[16..144];
                for j in 0..8 {
                    let ab = sb * 8 + j; // activation block
                    let q = &xq.q[ab * QK..(ab + 1) * QK];
                    let g = &qs[32 * (j / 2)..32 * (j / 2) + 32];
                    let shift = if j % 2 == 1 { 4 } else { 0 };
                    let s: i32 = g
                        .iter()
                        .zip(q)
                        .map(|(&w, &a)| i32::from((w >> shift) & 0xF) * i32::from(a))
                        .sum();
                    let (sc, m) = q4k_scale_min(j, scales);
                    acc += xq.d[ab]
                        * (d * f32::from(sc) * s as f32 - dmin * f32::from(m) * xq.isum[ab] as f32);
                }
            }
            acc
        }
        GgmlType::Q6K => {
            let mut acc = 0f32;
            for (sb, blk) in row.chunks_exact(210).enumerate() {
                let d = f16_at(blk, 208);
                let sc = &blk[192..208];
                // 16 groups of 16 weights; group g covers weights 16g..16g+16 of the block.
                let mut groups = [0i32; 16];
                for n in 0..2 {
                    let ql = &blk[64 * n..64 * n + 64];
                    let qh = &blk[128 + 32 * n..128 + 32 * n + 32];
                    let base = sb * 256 + 128 * n;
                    for l in 0..32 {
                        let q1 = i32::from((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
                        let q2 = i32::from((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                        let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                        let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                        let gi = 8 * n + l / 16;
                        groups[gi] += q1 * i32::from(xq.q[base + l]);
                        groups[gi + 2] += q2 * i32::from(xq.q[base + l + 32]);
                        groups[gi + 4] += q3 * i32::from(xq.q[base + l + 64]);
                        groups[gi + 6] += q4 * i32::from(xq.q[base + l + 96]);
                    }
                }
                for (g, &s) in groups.iter().enumerate() {
                    let ab = sb * 8 + g / 2;
                    acc += d * f32::from(sc[g] as i8) * xq.d[ab] * s as f32;
                }
            }
            acc
        }
    }
}
