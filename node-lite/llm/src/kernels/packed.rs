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
//! | [`Format::I8`] | Q8_0, Q5_0 | `32·R` signed bytes, `R` f32 `d` | `d·q` |
//! | [`Format::I8Min`] | Q5_1 | `32·R` bytes (`0..32`), `R` f32 `d`, `R` f32 `m` | `d·q + m` |
//! | [`Format::I8Half`] | Q6_K | `32·R` signed bytes, `2·R` f32 `d` (one per 16) | `d_h·q` |
//! | [`Format::Raw`] | F16, F32 | the GGUF rows unchanged | per-row kernels |
//!
//! Byte order inside a group and block: chunk `j` (`4·R` bytes) holds, for row `r`, bytes
//! `4r..4r+4` = four consecutive weights. In `U4`, chunk `j ∈ 0..4` carries weights
//! `4j..4j+4` in its low nibbles and `16+4j..16+4j+4` in its high nibbles; in the I8 formats,
//! chunk `j ∈ 0..8` carries weights `4j..4j+4` (so chunks 0–3 are the first 16, 4–7 the
//! second). A 4-byte broadcast of the activations meets `R` rows × 4 weights (`vpdpbusd`,
//! `i32x4.relaxed_dot_i8x16_i7x16_add`).
//!
//! Q4_0 becomes `m = −8d`, Q5_0 `q − 16`, Q6_K `q − 32` with its per-16 `d·sc`, Q4_K's
//! super-blocks per-32 `d·sc` and `−dmin·mn`; each is exact in f32, so the packed product
//! equals the GGUF's up to summation order.

use crate::quant::{GgmlType, dequantize_row, f16_at, q4k_scale_min, q5_values};

use super::{Q8Ref, QK};
use crate::par::SharedMut;

/// How a packed matrix stores its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// Unsigned 4-bit values with an f32 scale and minimum per block of 32.
    U4,
    /// Signed 8-bit values with an f32 scale per block of 32.
    I8,
    /// 8-bit values with an f32 scale and minimum per block of 32.
    I8Min,
    /// Signed 8-bit values with an f32 scale per 16.
    I8Half,
    /// The GGUF rows as they are.
    Raw(GgmlType),
}

impl Format {
    /// The format GGUF type `ty` is packed into.
    pub fn of(ty: GgmlType) -> Format {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4K => Format::U4,
            GgmlType::Q8_0 | GgmlType::Q5_0 => Format::I8,
            GgmlType::Q5_1 => Format::I8Min,
            GgmlType::Q6K => Format::I8Half,
            other => Format::Raw(other),
        }
    }

    /// Whether blocks carry a minimum (`m`).
    pub fn has_min(self) -> bool {
        matches!(self, Format::U4 | Format::I8Min)
    }

    /// Scales per row and block of 32.
    pub fn scales(self) -> usize {
        if self == Format::I8Half { 2 } else { 1 }
    }

    /// One of the 8-bit formats.
    pub fn is_i8(self) -> bool {
        matches!(self, Format::I8 | Format::I8Min | Format::I8Half)
    }
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
    /// Rows per interleaved group (packed formats).
    pub r: usize,
    /// The GGUF type it came from.
    pub source: GgmlType,
    pub(crate) q: Vec<u8>,
    /// Scales: for group-block `gb` and half `h`, rows at `(gb·scales + h)·r ..`.
    pub(crate) d: Vec<f32>,
    /// Minimums (formats with one): rows at `gb·r ..`.
    pub(crate) m: Vec<f32>,
    /// [`Format::I8`] with no value of −128: every `|q|` fits in 7 bits, so a kernel may
    /// multiply `|q|` by the activations carrying `q`'s sign (wasm relaxed SIMD's dot wants
    /// one 7-bit operand). Quantizers never write −128 (they round into `±127`); a file
    /// that does gets the general kernel.
    pub(crate) i7: bool,
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
        let format = Format::of(ty);
        let mut p = PackedMat {
            rows,
            cols,
            format,
            r,
            source: ty,
            q: Vec::new(),
            d: Vec::new(),
            m: Vec::new(),
            i7: false,
        };
        if let Format::Raw(_) = format {
            p.q = data.to_vec();
            return p;
        }
        let nb = cols / QK;
        let groups = rows.div_ceil(r);
        let bpb = p.block_bytes();
        let spb = format.scales();
        p.q = vec![0u8; groups * nb * bpb];
        p.d = vec![0f32; groups * nb * spb * r];
        if format.has_min() {
            p.m = vec![0f32; groups * nb * r];
        }
        let mut vals = [0u8; QK];
        for row in 0..rows {
            let (g, lane) = (row / r, row % r);
            let src = &data[row * rb..(row + 1) * rb];
            for b in 0..nb {
                let (d, m) = block_values(ty, src, b, &mut vals);
                let gb = g * nb + b;
                for (h, &dh) in d.iter().take(spb).enumerate() {
                    p.d[(gb * spb + h) * r + lane] = dh;
                }
                if format.has_min() {
                    p.m[gb * r + lane] = m;
                }
                let dst = &mut p.q[gb * bpb..(gb + 1) * bpb];
                if format == Format::U4 {
                    for j in 0..4 {
                        for i in 0..4 {
                            dst[j * 4 * r + lane * 4 + i] =
                                vals[4 * j + i] | (vals[16 + 4 * j + i] << 4);
                        }
                    }
                } else {
                    for j in 0..8 {
                        for i in 0..4 {
                            dst[j * 4 * r + lane * 4 + i] = vals[4 * j + i];
                        }
                    }
                }
            }
        }
        p.i7 = format == Format::I8 && !p.q.contains(&0x80);
        p
    }

    /// Columns `c0..c1` of every row as a matrix of their own (`c0`, `c1` multiples of 32, and
    /// of the type's block for an unpacked type): one rank's share of a matrix whose *inputs*
    /// are split between instances (a tensor-parallel `wo` or `down`). The values are copied
    /// as they are, so the slice's products are the full matrix's restricted to those columns.
    ///
    /// # Panics
    /// If the range is not block-aligned or exceeds the columns.
    pub fn slice_cols(&self, c0: usize, c1: usize) -> PackedMat {
        let be = match self.format {
            Format::Raw(ty) => ty.block_elems().max(QK),
            _ => QK,
        };
        assert!(
            c0 < c1 && c1 <= self.cols && c0.is_multiple_of(be) && c1.is_multiple_of(be),
            "columns {c0}..{c1} of {} are not whole blocks",
            self.cols
        );
        let mut p = PackedMat {
            rows: self.rows,
            cols: c1 - c0,
            format: self.format,
            r: self.r,
            source: self.source,
            q: Vec::new(),
            d: Vec::new(),
            m: Vec::new(),
            i7: self.i7,
        };
        if let Format::Raw(ty) = self.format {
            let (a, b) = (ty.row_bytes(c0), ty.row_bytes(c1));
            for row in 0..self.rows {
                p.q.extend_from_slice(&self.raw_row(row)[a..b]);
            }
            return p;
        }
        let (nb, b0, b1) = (self.cols / QK, c0 / QK, c1 / QK);
        let (bpb, spb, r) = (self.block_bytes(), self.format.scales(), self.r);
        for g in 0..self.groups() {
            let (s, e) = (g * nb + b0, g * nb + b1);
            p.q.extend_from_slice(&self.q[s * bpb..e * bpb]);
            p.d.extend_from_slice(&self.d[s * spb * r..e * spb * r]);
            if self.format.has_min() {
                p.m.extend_from_slice(&self.m[s * r..e * r]);
            }
        }
        p
    }

    /// Bytes of quantized values per group and block.
    pub fn block_bytes(&self) -> usize {
        match self.format {
            Format::U4 => 16 * self.r,
            Format::Raw(_) => 0,
            _ => 32 * self.r,
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
        if let Format::Raw(ty) = self.format {
            dequantize_row(ty, self.raw_row(row), out);
            return;
        }
        let (r, nb, bpb, spb) = (
            self.r,
            self.cols / QK,
            self.block_bytes(),
            self.format.scales(),
        );
        let (g, lane) = (row / r, row % r);
        for b in 0..nb {
            let gb = g * nb + b;
            let q = &self.q[gb * bpb..(gb + 1) * bpb];
            let d = |h: usize| self.d[(gb * spb + h) * r + lane];
            let m = if self.format.has_min() {
                self.m[gb * r + lane]
            } else {
                0.0
            };
            let y = &mut out[b * QK..(b + 1) * QK];
            if self.format == Format::U4 {
                for j in 0..4 {
                    for i in 0..4 {
                        let v = q[j * 4 * r + lane * 4 + i];
                        y[4 * j + i] = d(0) * f32::from(v & 0xF) + m;
                        y[16 + 4 * j + i] = d(0) * f32::from(v >> 4) + m;
                    }
                }
            } else {
                for j in 0..8 {
                    for i in 0..4 {
                        let v = q[j * 4 * r + lane * 4 + i];
                        let k = 4 * j + i;
                        let dh = d(k / 16 % spb);
                        y[k] = if self.format == Format::I8Min {
                            dh * f32::from(v) + m
                        } else {
                            dh * f32::from(v as i8)
                        };
                    }
                }
            }
        }
    }
}

/// The 32 integer values of block `b` of a GGUF row (nibbles as `0..16`; 8-bit formats as the
/// byte the kernels read: signed for Q8_0, Q5_0 − 16 and Q6_K − 32, unsigned `0..32` for Q5_1),
/// the block's scales (one, or one per 16 for Q6_K) and its minimum, with
/// `w = d·q + m`.
fn block_values(ty: GgmlType, row: &[u8], b: usize, vals: &mut [u8; QK]) -> ([f32; 2], f32) {
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
            ([d, 0.0], m)
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let bb = ty.block_bytes();
            let blk = &row[b * bb..(b + 1) * bb];
            let q = q5_values(ty, blk);
            let d = f16_at(blk, 0);
            if ty == GgmlType::Q5_1 {
                vals.copy_from_slice(&q);
                ([d, 0.0], f16_at(blk, 2))
            } else {
                for (v, &x) in vals.iter_mut().zip(&q) {
                    *v = (i16::from(x) - 16) as i8 as u8;
                }
                ([d, 0.0], 0.0)
            }
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
            ([d * f32::from(sc), 0.0], -(dmin * f32::from(mn)))
        }
        GgmlType::Q6K => {
            // Block b of 8 in a super-block: half n (128 weights), quarter k within it.
            let (sb, bi) = (b / 8, b % 8);
            let blk = &row[sb * 210..(sb + 1) * 210];
            let (n, k) = (bi / 4, bi % 4);
            let ql = &blk[64 * n..64 * n + 64];
            let qh = &blk[128 + 32 * n..128 + 32 * n + 32];
            let sc = &blk[192 + 8 * n..192 + 8 * n + 8];
            let d = f16_at(blk, 208);
            for l in 0..32 {
                let low = match k {
                    0 => ql[l] & 0xF,
                    1 => ql[l + 32] & 0xF,
                    2 => ql[l] >> 4,
                    _ => ql[l + 32] >> 4,
                };
                let high = (qh[l] >> (2 * k)) & 3;
                vals[l] = ((i16::from(low | (high << 4))) - 32) as i8 as u8;
            }
            (
                [
                    d * f32::from(sc[2 * k] as i8),
                    d * f32::from(sc[2 * k + 1] as i8),
                ],
                0.0,
            )
        }
        GgmlType::Q8_0 => {
            let blk = &row[b * 34..(b + 1) * 34];
            vals.copy_from_slice(&blk[2..34]);
            ([f16_at(blk, 0), 0.0], 0.0)
        }
        _ => ([0.0; 2], 0.0),
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
    let (r, bpb, spb) = (m.r, m.block_bytes(), m.format.scales());
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
                    let mut s = [0i32; 2];
                    if m.format == Format::U4 {
                        for j in 0..4 {
                            for i in 0..4 {
                                let v = q[j * 4 * r + lane * 4 + i];
                                s[0] += i32::from(v & 0xF) * i32::from(x[4 * j + i]);
                                s[0] += i32::from(v >> 4) * i32::from(x[16 + 4 * j + i]);
                            }
                        }
                    } else {
                        for j in 0..8 {
                            for i in 0..4 {
                                let byte = q[j * 4 * r + lane * 4 + i];
                                let v = if m.format == Format::I8Min {
                                    i32::from(byte)
                                } else {
                                    i32::from(byte as i8)
                                };
                                s[(j / 4) % spb] += v * i32::from(x[4 * j + i]);
                            }
                        }
                    }
                    let ab = t * nb + b;
                    for (h, &sh) in s.iter().enumerate().take(spb) {
                        acc += m.d[(gb * spb + h) * r + lane] * acts.d[ab] * sh as f32;
                    }
                    if m.format.has_min() {
                        acc += m.m[gb * r + lane] * acts.ds[ab];
                    }
                }
                // SAFETY: this row belongs to groups g0..g1 (the caller's contract).
                unsafe { out.write_slice(t * ld + g * r + lane, &[acc]) };
            }
        }
    }
}
