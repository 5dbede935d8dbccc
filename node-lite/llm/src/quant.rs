//! ggml tensor types: block layouts and the scalar reference dequantization.
//!
//! Layouts (little-endian, `d`/`m` are IEEE half floats):
//!
//! | type | weights per block | bytes | layout | weight |
//! | --- | --- | --- | --- | --- |
//! | F32 | 1 | 4 | f32 | w |
//! | F16 | 1 | 2 | f16 | w |
//! | Q8_0 | 32 | 34 | d, 32 × i8 | d·q |
//! | Q4_0 | 32 | 18 | d, 16 B nibbles (low = 0–15, high = 16–31) | d·(q − 8) |
//! | Q4_1 | 32 | 20 | d, m, 16 B nibbles | d·q + m |
//! | Q5_0 | 32 | 22 | d, 4 B of 5th bits, 16 B nibbles | d·(q − 16) |
//! | Q5_1 | 32 | 24 | d, m, 4 B of 5th bits, 16 B nibbles | d·q + m |
//! | Q4_K | 256 | 144 | d, dmin, 12 B of 6-bit (scale, min) × 8, 128 B nibbles | d·sc·q − dmin·mn |
//! | Q6_K | 256 | 210 | 128 B low nibbles, 64 B high 2 bits, 16 × i8 scales, d | d·sc·(q − 32) |

use half::f16;

/// Weights per block of the 32-weight types, and per activation block of the integer kernels
/// (activations are quantized in blocks of this size to meet the weights block by block).
pub const QK: usize = 32;

/// The element types the engine reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// 8-bit, one scale per 32.
    Q8_0,
    /// 4-bit symmetric, one scale per 32.
    Q4_0,
    /// 4-bit with scale and minimum per 32.
    Q4_1,
    /// 5-bit symmetric, one scale per 32 (K-quant files fall back to it for rows that are
    /// not whole 256-blocks, e.g. SmolLM2's width 576).
    Q5_0,
    /// 5-bit with scale and minimum per 32.
    Q5_1,
    /// 4-bit k-quant: super-blocks of 256 with 6-bit sub-block scales and minimums.
    Q4K,
    /// 6-bit k-quant: super-blocks of 256 with 8-bit scales per 16.
    Q6K,
}

/// The ggml name of a type id, for error messages (also for the ids we do not support).
pub fn ggml_type_name(id: u32) -> String {
    let n = match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        _ => return format!("#{id}"),
    };
    n.to_string()
}

impl GgmlType {
    /// Every supported type.
    pub const ALL: [GgmlType; 9] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q4K,
        GgmlType::Q6K,
    ];

    /// The type for a ggml type id, if supported.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            14 => GgmlType::Q6K,
            _ => return None,
        })
    }

    /// The ggml type id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4K => 12,
            GgmlType::Q6K => 14,
        }
    }

    /// The ggml name (`Q4_1`, `Q6_K`, …).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q6K => "Q6_K",
        }
    }

    /// Weights per block.
    pub fn block_elems(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 => 1,
            GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
                32
            }
            GgmlType::Q4K | GgmlType::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 => 2,
            GgmlType::Q8_0 => 34,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q4K => 144,
            GgmlType::Q6K => 210,
        }
    }

    /// Bytes of a row of `n` weights (`n` a multiple of the block size).
    pub fn row_bytes(self, n: usize) -> usize {
        n / self.block_elems() * self.block_bytes()
    }
}

#[inline]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// The 32 unsigned 5-bit values of a Q5_0 or Q5_1 block (ggml: low nibbles in `qs`, weights
/// 0–15 from the low halves and 16–31 from the high halves; the fifth bit of weight `j` is
/// bit `j` of the little-endian `qh`).
#[inline]
pub(crate) fn q5_values(ty: GgmlType, blk: &[u8]) -> [u8; 32] {
    let off = if ty == GgmlType::Q5_1 { 4 } else { 2 };
    let qh = u32::from_le_bytes([blk[off], blk[off + 1], blk[off + 2], blk[off + 3]]);
    let qs = &blk[off + 4..off + 20];
    let mut v = [0u8; 32];
    for j in 0..16 {
        v[j] = (qs[j] & 0xF) | ((((qh >> j) & 1) as u8) << 4);
        v[j + 16] = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    v
}

/// The 6-bit (scale, min) pair `j` of a Q4_K block's 12 scale bytes (ggml's `get_scale_min_k4`).
#[inline]
pub(crate) fn q4k_scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Dequantize one row (`row` holds whole blocks) into `out` (its length = the row's weights).
/// The reference every kernel is tested against; also the GPU path's upload format.
pub fn dequantize_row(ty: GgmlType, row: &[u8], out: &mut [f32]) {
    let be = ty.block_elems();
    let bb = ty.block_bytes();
    debug_assert_eq!(row.len(), out.len() / be * bb);
    for (blk, y) in row.chunks_exact(bb).zip(out.chunks_exact_mut(be)) {
        match ty {
            GgmlType::F32 => y[0] = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]),
            GgmlType::F16 => y[0] = f16_at(blk, 0),
            GgmlType::Q8_0 => {
                let d = f16_at(blk, 0);
                for (o, &q) in y.iter_mut().zip(&blk[2..34]) {
                    *o = d * f32::from(q as i8);
                }
            }
            GgmlType::Q4_0 => {
                let d = f16_at(blk, 0);
                for j in 0..16 {
                    let q = blk[2 + j];
                    y[j] = d * (f32::from(q & 0xF) - 8.0);
                    y[j + 16] = d * (f32::from(q >> 4) - 8.0);
                }
            }
            GgmlType::Q4_1 => {
                let d = f16_at(blk, 0);
                let m = f16_at(blk, 2);
                for j in 0..16 {
                    let q = blk[4 + j];
                    y[j] = d * f32::from(q & 0xF) + m;
                    y[j + 16] = d * f32::from(q >> 4) + m;
                }
            }
            GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let q = q5_values(ty, blk);
                let d = f16_at(blk, 0);
                if ty == GgmlType::Q5_1 {
                    let m = f16_at(blk, 2);
                    for (o, &v) in y.iter_mut().zip(&q) {
                        *o = d * f32::from(v) + m;
                    }
                } else {
                    for (o, &v) in y.iter_mut().zip(&q) {
                        *o = d * (f32::from(v) - 16.0);
                    }
                }
            }
            GgmlType::Q4K => {
                let d = f16_at(blk, 0);
                let dmin = f16_at(blk, 2);
                let scales = &blk[4..16];
                let qs = &blk[16..144];
                for g in 0..4 {
                    let (s1, m1) = q4k_scale_min(2 * g, scales);
                    let (s2, m2) = q4k_scale_min(2 * g + 1, scales);
                    let (d1, mn1) = (d * f32::from(s1), dmin * f32::from(m1));
                    let (d2, mn2) = (d * f32::from(s2), dmin * f32::from(m2));
                    let q = &qs[32 * g..32 * g + 32];
                    for l in 0..32 {
                        y[64 * g + l] = d1 * f32::from(q[l] & 0xF) - mn1;
                        y[64 * g + 32 + l] = d2 * f32::from(q[l] >> 4) - mn2;
                    }
                }
            }
            GgmlType::Q6K => {
                let ql = &blk[0..128];
                let qh = &blk[128..192];
                let sc = &blk[192..208];
                let d = f16_at(blk, 208);
                for n in 0..2 {
                    let (ql, qh, sc) = (&ql[64 * n..], &qh[32 * n..], &sc[8 * n..]);
                    let y = &mut y[128 * n..];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = i32::from((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
                        let q2 = i32::from((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                        let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                        let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                        let s = |k: usize| d * f32::from(sc[k] as i8);
                        y[l] = s(is) * q1 as f32;
                        y[l + 32] = s(is + 2) * q2 as f32;
                        y[l + 64] = s(is + 4) * q3 as f32;
                        y[l + 96] = s(is + 6) * q4 as f32;
                    }
                }
            }
        }
    }
}

/// Quantize `x` (a multiple of 32 long) to the ggml type `ty` — used by tests to make blocks
/// of every type, and by nothing on the inference path (weights arrive quantized).
pub fn quantize_row(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ty.row_bytes(x.len()));
    let h = |v: f32| f16::from_f32(v).to_bits().to_le_bytes();
    match ty {
        GgmlType::F32 => x
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        GgmlType::F16 => x.iter().for_each(|&v| out.extend_from_slice(&h(v))),
        GgmlType::Q8_0 => {
            for b in x.chunks_exact(32) {
                let amax = b.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d > 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&h(d));
                out.extend(
                    b.iter()
                        .map(|v| (v * id).round().clamp(-127.0, 127.0) as i8 as u8),
                );
            }
        }
        GgmlType::Q4_0 => {
            for b in x.chunks_exact(32) {
                let mx = b
                    .iter()
                    .fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
                let d = mx / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&h(d));
                let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
                for j in 0..16 {
                    out.push(q(b[j]) | (q(b[j + 16]) << 4));
                }
            }
        }
        GgmlType::Q4_1 => {
            for b in x.chunks_exact(32) {
                let mn = b.iter().fold(f32::MAX, |a, &v| a.min(v));
                let mx = b.iter().fold(f32::MIN, |a, &v| a.max(v));
                let d = (mx - mn) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&h(d));
                out.extend_from_slice(&h(mn));
                let q = |v: f32| (((v - mn) * id + 0.5) as i32).clamp(0, 15) as u8;
                for j in 0..16 {
                    out.push(q(b[j]) | (q(b[j + 16]) << 4));
                }
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            for b in x.chunks_exact(32) {
                let (d, m, q): (f32, f32, Vec<u8>) = if ty == GgmlType::Q5_0 {
                    let mx = b
                        .iter()
                        .fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
                    let d = mx / -16.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    let q = b
                        .iter()
                        .map(|&v| ((v * id + 16.5) as i32).clamp(0, 31) as u8)
                        .collect();
                    (d, 0.0, q)
                } else {
                    let mn = b.iter().fold(f32::MAX, |a, &v| a.min(v));
                    let mx = b.iter().fold(f32::MIN, |a, &v| a.max(v));
                    let d = (mx - mn) / 31.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    let q = b
                        .iter()
                        .map(|&v| (((v - mn) * id + 0.5) as i32).clamp(0, 31) as u8)
                        .collect();
                    (d, mn, q)
                };
                out.extend_from_slice(&h(d));
                if ty == GgmlType::Q5_1 {
                    out.extend_from_slice(&h(m));
                }
                let mut qh = 0u32;
                for (j, &v) in q.iter().enumerate() {
                    qh |= u32::from(v >> 4) << j;
                }
                out.extend_from_slice(&qh.to_le_bytes());
                for j in 0..16 {
                    out.push((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
                }
            }
        }
        GgmlType::Q4K => {
            for sb in x.chunks_exact(256) {
                // Per 32: scale and min (as in ggml's reference, without its search).
                let mut sc = [0f32; 8];
                let mut mn = [0f32; 8];
                for (j, b) in sb.chunks_exact(32).enumerate() {
                    let lo = b.iter().fold(0f32, |a, &v| a.min(v));
                    let hi = b.iter().fold(f32::MIN, |a, &v| a.max(v));
                    sc[j] = (hi - lo) / 15.0;
                    mn[j] = -lo;
                }
                let max_sc = sc.iter().fold(0f32, |a, &v| a.max(v));
                let max_mn = mn.iter().fold(0f32, |a, &v| a.max(v));
                let d = max_sc / 63.0;
                let dmin = max_mn / 63.0;
                let q6 = |v: f32, s: f32| {
                    if s > 0.0 {
                        ((v / s).round() as i32).clamp(0, 63) as u8
                    } else {
                        0
                    }
                };
                let ls: Vec<u8> = sc.iter().map(|&v| q6(v, d)).collect();
                let lm: Vec<u8> = mn.iter().map(|&v| q6(v, dmin)).collect();
                let mut scales = [0u8; 12];
                for j in 0..8 {
                    if j < 4 {
                        scales[j] = ls[j];
                        scales[j + 4] = lm[j];
                    } else {
                        scales[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
                        scales[j - 4] |= (ls[j] >> 4) << 6;
                        scales[j] |= (lm[j] >> 4) << 6;
                    }
                }
                let mut qs = [0u8; 128];
                for j in 0..8 {
                    let (s, m) = q4k_scale_min(j, &scales);
                    let dd = d * f32::from(s);
                    let dm = dmin * f32::from(m);
                    for l in 0..32 {
                        let v = sb[32 * j + l];
                        let q = if dd > 0.0 {
                            (((v + dm) / dd).round() as i32).clamp(0, 15) as u8
                        } else {
                            0
                        };
                        let (g, hi) = (j / 2, j % 2 == 1);
                        let idx = 32 * g + l;
                        qs[idx] |= if hi { q << 4 } else { q };
                    }
                }
                out.extend_from_slice(&h(d));
                out.extend_from_slice(&h(dmin));
                out.extend_from_slice(&scales);
                out.extend_from_slice(&qs);
            }
        }
        GgmlType::Q6K => {
            for sb in x.chunks_exact(256) {
                let mut scf = [0f32; 16];
                for (j, b) in sb.chunks_exact(16).enumerate() {
                    let mx = b
                        .iter()
                        .fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
                    scf[j] = mx / -32.0;
                }
                let max = scf
                    .iter()
                    .fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
                let d = max / -128.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let sc: Vec<i8> = scf
                    .iter()
                    .map(|&v| ((v * id).round() as i32).clamp(-128, 127) as i8)
                    .collect();
                let mut l8 = [0u8; 256];
                for j in 0..16 {
                    let s = d * f32::from(sc[j]);
                    for i in 0..16 {
                        let v = sb[16 * j + i];
                        let q = if s != 0.0 {
                            ((v / s).round() as i32).clamp(-32, 31)
                        } else {
                            0
                        };
                        l8[16 * j + i] = (q + 32) as u8;
                    }
                }
                let mut ql = [0u8; 128];
                let mut qh = [0u8; 64];
                for n in 0..2 {
                    for l in 0..32 {
                        let b = 128 * n;
                        let (q1, q2, q3, q4) =
                            (l8[b + l], l8[b + l + 32], l8[b + l + 64], l8[b + l + 96]);
                        ql[64 * n + l] = (q1 & 0xF) | ((q3 & 0xF) << 4);
                        ql[64 * n + l + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
                        qh[32 * n + l] =
                            (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
                    }
                }
                out.extend_from_slice(&ql);
                out.extend_from_slice(&qh);
                out.extend(sc.iter().map(|&s| s as u8));
                out.extend_from_slice(&h(d));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_within_its_precision() {
        let x = crate::testdata::test_data(512, 7, 1.0);
        for (ty, tol) in [
            (GgmlType::F32, 0.0),
            (GgmlType::F16, 1e-3),
            (GgmlType::Q8_0, 0.01),
            (GgmlType::Q4_0, 0.15),
            (GgmlType::Q4_1, 0.08),
            (GgmlType::Q5_0, 0.07),
            (GgmlType::Q5_1, 0.04),
            (GgmlType::Q4K, 0.12),
            (GgmlType::Q6K, 0.04),
        ] {
            let q = quantize_row(ty, &x);
            assert_eq!(q.len(), ty.row_bytes(x.len()), "{}", ty.name());
            let mut y = vec![0f32; x.len()];
            dequantize_row(ty, &q, &mut y);
            let worst = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst <= tol, "{}: max error {worst}", ty.name());
        }
    }

    #[test]
    fn type_ids_and_names_agree_with_ggml() {
        for ty in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(ty.id()), Some(ty));
            assert_eq!(ggml_type_name(ty.id()), ty.name());
        }
        assert_eq!(GgmlType::from_id(11), None);
        assert_eq!(ggml_type_name(13), "Q5_K");
    }
}
