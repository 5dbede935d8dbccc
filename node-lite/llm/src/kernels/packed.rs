//! Weights repacked at load into row-interleaved groups, so one SIMD instruction works on
//! several rows at once and every lane of the accumulator is one output row (no horizontal
//! sums), and a prefill tile reuses each unpacked weight register for several tokens.
//!
//! Formats (blocks of 32 weights along a row, `R` rows per group, the last group padded with
//! zero rows):
//!
//! | format | from | per group and block | weight |
//! | --- | --- | --- | --- |
//! | [`Format::U4`] | Q4_0, Q4_1, Q4_K | `16·R` bytes of nibbles, `R` f32 `d`, `R` f32 `m` | `d·q + m`, `q ∈ 0..16` |
//! | [`Format::I8`] | Q8_0 | `32·R` signed bytes, `R` f32 `d` | `d·q` |
//! | [`Format::Raw`] | Q6_K, F16, F32 | the GGUF rows unchanged | per-row kernels |
//!
//! Byte order inside a group and block: chunk `j` (`4·R` bytes) holds, for row `r`, bytes
//! `4r..4r+4` = four consecutive weights. In `U4`, chunk `j ∈ 0..4` carries weights
//! `4j..4j+4` in its low nibbles and `16+4j..16+4j+4` in its high nibbles; in `I8`, chunk
//! `j ∈ 0..8` carries weights `4j..4j+4`. So a 4-byte broadcast of the activations meets
//! `R` rows × 4 weights (`vpdpbusd`, `i32x4.relaxed_dot_i8x16_i7x16_add`).
//!
//! Q4_0 becomes `m = −8d`, Q4_K's super-blocks become per-32 `d·sc` and `−dmin·mn`; each is
//! exact in f32, so the packed product equals the GGUF's up to summation order.

use crate::quant::{GgmlType, dequantize_row, f16_at, q4k_scale_min};

use super::{Q8Ref, QK};
use crate::par::SharedMut;

/// How a packed matrix stores its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Unsigned 4-bit values with an f32 scale and minimum per block of 32.
    U4,
    /// Signed 8-bit values with an f32 scale per block of 32.
    I8,
    /// The GGUF rows as they are.
    Raw(GgmlType),
}

/// A weight matrix (`rows` outputs × `cols` inputs) in the layout the kernels want.
#[derive(Clone)]
pub struct PackedMat {
    /// Output rows.
    pub rows: usize,
    /// Inputs per row.
    pub cols: usize,
    /// Storage format.
    pub format: Format,
    /// Rows per interleaved group (`U4`, `I8`).
    pub r: usize,
    /// The GGUF type it came from.
    pub source: GgmlType,
    pub(crate) q: Vec<u8>,
    pub(crate) d: Vec<f32>,
    pub(crate) m: Vec<f32>,
}

impl std::fmt::Debug for PackedMat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMat")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("format", &self.format)
            .field("r", &self.r)
            .finish_non_exhaustive()
    }
}

impl PackedMat {
    /// Repack `rows` GGUF rows of type `ty` (`data` = the whole tensor) into groups of `r`.
    /// `data` must hold exactly `rows · ty.row_bytes(cols)` bytes and `cols` be a multiple
    /// of the type's block (the model loader checks both).
    pub fn pack(ty: GgmlType, data: &[u8], rows: usize, cols: usize, r: usize) -> Self {
        let rb = ty.row_bytes(cols);
        debug_assert_eq!(data.len(), rows * rb);
        let format = match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4K => Format::U4,
            GgmlType::Q8_0 => Format::I8,
            other => Format::Raw(other),
        };
        let mut p = PackedMat {
            rows,
            cols,
            format,
            r,
            source: ty,
            q: Vec::new(),
            d: Vec::new(),
            m: Vec::new(),
        };
        if let Format::Raw(_) = format {
            p.q = data.to_vec();
            return p;
        }
        let nb = cols / QK;
        let groups = rows.div_ceil(r);
        let bpb = p.block_bytes();
        p.q = vec![0u8; groups * nb * bpb];
        p.d = vec![0f32; groups * nb * r];
        if format == Format::U4 {
            p.m = vec![0f32; groups * nb * r];
        }
        let mut vals = [0u8; QK];
        for row in 0..rows {
            let (g, lane) = (row / r, row % r);
            let src = &data[row * rb..(row + 1) * rb];
            for b in 0..nb {
                let (d, m) = block_values(ty, src, b, &mut vals);
                let gb = g * nb + b;
                p.d[gb * r + lane] = d;
                if format == Format::U4 {
                    p.m[gb * r + lane] = m;
                }
                let dst = &mut p.q[gb * bpb..(gb + 1) * bpb];
                match format {
                    Format::U4 => {
                        for j in 0..4 {
                            for i in 0..4 {
                                dst[j * 4 * r + lane * 4 + i] =
                                    vals[4 * j + i] | (vals[16 + 4 * j + i] << 4);
                            }
                        }
                    }
                    _ => {
                        for j in 0..8 {
                            for i in 0..4 {
                                dst[j * 4 * r + lane * 4 + i] = vals[4 * j + i];
                            }
                        }
                    }
                }
            }
        }
        p
    }

    /// Bytes of quantized values per group and block.
    pub fn block_bytes(&self) -> usize {
        match self.format {
            Format::U4 => 16 * self.r,
            Format::I8 => 32 * self.r,
            Format::Raw(_) => 0,
        }
    }

    /// Row groups (the unit of work the kernels and threads split).
    pub fn groups(&self) -> usize {
        match self.format {
            Format::Raw(_) => self.rows,
            _ => self.rows.div_ceil(self.r),
        }
    }

    /// Rows per group as far as work splitting is concerned.
    pub fn group_rows(&self) -> usize {
        match self.format {
            Format::Raw(_) => 1,
            _ => self.r,
        }
    }

    /// One GGUF row (a `Raw` matrix only).
    pub(crate) fn raw_row(&self, row: usize) -> &[u8] {
        let rb = self.source.row_bytes(self.cols);
        &self.q[row * rb..(row + 1) * rb]
    }

    /// Bytes the matrix occupies (what one pass over it reads).
    pub fn bytes(&self) -> usize {
        self.q.len() + 4 * (self.d.len() + self.m.len())
    }

    /// Dequantize row `row` into `out` (`cols` long): the embedding lookup.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        match self.format {
            Format::Raw(ty) => dequantize_row(ty, self.raw_row(row), out),
            Format::U4 | Format::I8 => {
                let (r, nb, bpb) = (self.r, self.cols / QK, self.block_bytes());
                let (g, lane) = (row / r, row % r);
                for b in 0..nb {
                    let gb = g * nb + b;
                    let q = &self.q[gb * bpb..(gb + 1) * bpb];
                    let d = self.d[gb * r + lane];
                    let y = &mut out[b * QK..(b + 1) * QK];
                    if self.format == Format::U4 {
                        let m = self.m[gb * r + lane];
                        for j in 0..4 {
                            for i in 0..4 {
                                let v = q[j * 4 * r + lane * 4 + i];
                                y[4 * j + i] = d * f32::from(v & 0xF) + m;
                                y[16 + 4 * j + i] = d * f32::from(v >> 4) + m;
                            }
                        }
                    } else {
                        for j in 0..8 {
                            for i in 0..4 {
                                let v = q[j * 4 * r + lane * 4 + i] as i8;
                                y[4 * j + i] = d * f32::from(v);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The 32 integer values of block `b` of a GGUF row (nibbles as `0..16`, Q8_0 bytes as they
/// are) and the block's `(d, m)` with `w = d·q + m`.
fn block_values(ty: GgmlType, row: &[u8], b: usize, vals: &mut [u8; QK]) -> (f32, f32) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let bb = ty.block_bytes();
            let blk = &row[b * bb..(b + 1) * bb];
            let off = if ty == GgmlType::Q4_1 { 4 } else { 2 };
            for j in 0..16 {
                vals[j] = blk[off + j] & 0xF;
                vals[j + 16] = blk[off + j] >> 4;
            }
            let d = f16_at(blk, 0);
            let m = if ty == GgmlType::Q4_1 {
                f16_at(blk, 2)
            } else {
                -8.0 * d
            };
            (d, m)
        }
        GgmlType::Q4K => {
            let (sb, j) = (b / 8, b % 8);
            let blk = &row[sb * 144..(sb + 1) * 144];
            let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
            let (sc, mn) = q4k_scale_min(j, &blk[4..16]);
            let g = &blk[16 + 32 * (j / 2)..16 + 32 * (j / 2) + 32];
            let shift = if j % 2 == 1 { 4 } else { 0 };
            for (v, &q) in vals.iter_mut().zip(g) {
                *v = (q >> shift) & 0xF;
            }
            (d * f32::from(sc), -(dmin * f32::from(mn)))
        }
        GgmlType::Q8_0 => {
            let blk = &row[b * 34..(b + 1) * 34];
            vals.copy_from_slice(&blk[2..34]);
            (f16_at(blk, 0), 0.0)
        }
        _ => (0.0, 0.0),
    }
}

/// Every token's activations, quantized per block of 32, plus what the kernels derive from
/// them once per call: `ds = d · Σq` per block (for the weights' minimums).
#[derive(Debug, Clone, Default)]
pub struct Acts {
    /// Tokens.
    pub n: usize,
    /// Values per token.
    pub k: usize,
    /// The f32 values (`n × k`; read by the `Raw` F32/F16 rows).
    pub x: Vec<f32>,
    /// Quantized values (`n × k`, in `[-127, 127]`).
    pub q: Vec<i8>,
    /// Scale per block (`n × k/32`).
    pub d: Vec<f32>,
    /// Integer sum per block.
    pub isum: Vec<i32>,
    /// `d · isum` per block.
    pub ds: Vec<f32>,
}

impl Acts {
    /// Quantize `n` tokens of `k` values (`x.len() = n·k`, `k` a multiple of 32).
    pub fn quantize(&mut self, x: &[f32], k: usize) {
        let n = x.len() / k;
        let nb = k / QK;
        self.n = n;
        self.k = k;
        self.x.clear();
        self.x.extend_from_slice(x);
        self.q.resize(n * k, 0);
        self.d.resize(n * nb, 0.0);
        self.isum.resize(n * nb, 0);
        self.ds.resize(n * nb, 0.0);
        crate::ops::quantize(x, &mut self.q, &mut self.d, &mut self.isum, &mut self.ds);
    }

    /// Token `t` as the per-row kernels see it.
    pub fn token(&self, t: usize) -> Q8Ref<'_> {
        let nb = self.k / QK;
        Q8Ref {
            q: &self.q[t * self.k..(t + 1) * self.k],
            d: &self.d[t * nb..(t + 1) * nb],
            isum: &self.isum[t * nb..(t + 1) * nb],
        }
    }

    /// Token `t`'s f32 values.
    pub fn x(&self, t: usize) -> &[f32] {
        &self.x[t * self.k..(t + 1) * self.k]
    }
}

/// Portable kernel over packed groups: `out[t·ld + row]` for every row of groups
/// `g0..g1` and every token. The reference the SIMD tile kernels are tested against.
///
/// # Safety
/// As [`super::gemm_shared`] (which checked the bounds).
pub(crate) unsafe fn gemm_scalar(
    m: &PackedMat,
    acts: &Acts,
    g0: usize,
    g1: usize,
    out: SharedMut,
    ld: usize,
) {
    let nb = m.cols / QK;
    let (r, bpb) = (m.r, m.block_bytes());
    for g in g0..g1 {
        let live = r.min(m.rows - g * r);
        for t in 0..acts.n {
            let xq = &acts.q[t * m.cols..(t + 1) * m.cols];
            for lane in 0..live {
                let mut acc = 0f32;
                for b in 0..nb {
                    let gb = g * nb + b;
                    let q = &m.q[gb * bpb..(gb + 1) * bpb];
                    let x = &xq[b * QK..(b + 1) * QK];
                    let mut s = 0i32;
                    if m.format == Format::U4 {
                        for j in 0..4 {
                            for i in 0..4 {
                                let v = q[j * 4 * r + lane * 4 + i];
                                s += i32::from(v & 0xF) * i32::from(x[4 * j + i]);
                                s += i32::from(v >> 4) * i32::from(x[16 + 4 * j + i]);
                            }
                        }
                    } else {
                        for j in 0..8 {
                            for i in 0..4 {
                                let v = q[j * 4 * r + lane * 4 + i] as i8;
                                s += i32::from(v) * i32::from(x[4 * j + i]);
                            }
                        }
                    }
                    let ab = t * nb + b;
                    acc += m.d[gb * r + lane] * acts.d[ab] * s as f32;
                    if m.format == Format::U4 {
                        acc += m.m[gb * r + lane] * acts.ds[ab];
                    }
                }
                // SAFETY: this row belongs to groups g0..g1 (the caller's contract).
                unsafe { out.write_slice(t * ld + g * r + lane, &[acc]) };
            }
        }
    }
}
