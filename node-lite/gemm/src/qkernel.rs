//! Integer-weight matrix multiply, the default CPU engine in the browser and natively:
//! `C = dequant(Aq · Bq) + bias`.
//!
//! - `B` (a weight, `k × n`) is quantized once, at load, per output column to [`WeightBits`]:
//!   int8 for the compact weights, int12 for the f32 ones (`sb[j] = max|B[·, j]| / qmax`,
//!   `Bq = round(B / sb)` in `[-qmax, qmax]`, qmax 127 or 2047), stored as `i16` in panels of
//!   [`QIsa::nr`] columns (8, or 32 for the AVX-512 tile), `k` taken in pairs: panel `j0`, pair
//!   `q` holds `B(2q, j0), B(2q+1, j0), B(2q, j0+1), B(2q+1, j0+1), …` (`k` padded to even,
//!   columns past `n` zero).
//! - `A` (activations) is quantized per row on every call (`sa[i] = max|A[i, ·]| / 8191`: 14
//!   bits, since the tile multiplies `i16` anyway; 8-bit activations cost too much accuracy), into
//!   pairs of `i16` packed in one `u32`, rows padded to a multiple of the tile height.
//! - A tile multiplies an `A` pair (splatted) by a `B` pair-row with one `i32x4.dot_i16x8_s`
//!   (wasm `simd128`; `vpmaddwd` + `vpaddd` on AVX2): 8 multiply-adds per instruction, twice
//!   what an f32x4 mul + add does. With VNNI the multiply and the add are one instruction,
//!   `vpdpwssd`: 16 multiply-adds per AVX-VNNI (`ymm`) instruction, 32 per AVX-512 VNNI (`zmm`)
//!   one, twice an f32 FMA of the same width. (`vpdpbusd`, u8 × i8, would do twice as many
//!   again, but needs 8-bit activations, which cost MiniLM too much accuracy: see `QMAX_A`.) Sums are exact in `i32` over chunks of `k` short enough that
//!   `8191 · qmax · chunk < 2³¹` (int8: 2064, int12: 128); each chunk is then added in f32:
//!   `C = Σ_chunks sum · sa[i] · sb[j] + bias[j]`. Both widths run the same tiles at the same
//!   speed; int12 keeps MiniLM at min cosine ≥ 0.99998 to the reference (int8: 0.997).
//!
//! A portable scalar tile runs everywhere and is the reference for the SIMD ones
//! ([`self_test`]).

// SIMD intrinsics and raw tile pointers; every unsafe block states its bounds argument.
#![allow(unsafe_code)]

use crate::kernel::Isa;

/// Columns per tile and per panel of the 128/256-bit tiles ([`QIsa::nr`]).
pub const NR: usize = 8;
/// The widest panel ([`QIsa::nr`] of the AVX-512 tile).
const NR_MAX: usize = 32;
/// The most rows a tile has ([`QIsa::mr`]).
const MR_MAX: usize = 12;
/// Rows of `A` per block (the block's quantized rows stay in L2 while the panels stream).
const MC: usize = 96;
/// Most pairs of `k` per chunk (a panel's chunk, 4 KiB, 16 KiB for the 32-column AVX-512
/// panels, stays in L1).
const KC2: usize = 128;
/// Largest quantized activation magnitude: activations keep 14 bits (they are stored as `i16`
/// anyway, so this costs nothing; int8 activations lose MiniLM's accuracy: min cosine 0.979 on
/// the golden sentences).
const QMAX_A: f32 = 8191.0;

/// How many bits a quantized weight keeps. Both run on the same `i16` tiles (same speed); the
/// wider one sums in shorter `k` chunks so no `i32` sum can overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightBits {
    /// `[-127, 127]`: the compact weights (min cosine ≈ 0.997 on MiniLM).
    Int8,
    /// `[-2047, 2047]`: 12 bits, for the f32 weights (min cosine ≥ 0.9999).
    Int12,
}

impl WeightBits {
    /// Largest quantized weight magnitude.
    pub fn qmax(self) -> f32 {
        match self {
            WeightBits::Int8 => 127.0,
            WeightBits::Int12 => 2047.0,
        }
    }

    /// Pairs of `k` summed in `i32` before the tile flushes to f32: the deepest chunk with
    /// `2 · pairs · QMAX_A · qmax < 2³¹` (int8: 1032 pairs, deeper than MiniLM's 1536 / 2;
    /// int12: 64 pairs).
    pub fn chunk_pairs(self) -> usize {
        let depth = (f64::from(i32::MAX) / (f64::from(QMAX_A) * f64::from(self.qmax()))).floor();
        (depth as usize / 2).max(1)
    }

    /// The width's label, `int8` or `int12`: the prefix of a kernel name (`int12-avx2`).
    pub fn name(self) -> &'static str {
        match self {
            WeightBits::Int8 => "int8",
            WeightBits::Int12 => "int12",
        }
    }
}

/// Which integer tile runs (derived from the f32 [`Isa`] and the CPU's VNNI extensions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QIsa {
    /// Portable Rust, 4×8.
    Scalar,
    /// x86-64 AVX2 `vpmaddwd` + `vpaddd`, 8×8.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// x86-64 AVX-VNNI `vpdpwssd ymm` (Alder Lake, Zen 5), 8×8.
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    /// x86-64 AVX-512 VNNI `vpdpwssd zmm` (Ice Lake and later Xeons, Zen 4), 12×32.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// wasm32 `simd128` `i32x4.dot_i16x8_s`, 4×8.
    #[cfg(all(
        target_arch = "wasm32",
        any(target_feature = "simd128", feature = "wasm-simd")
    ))]
    Simd128,
}

impl QIsa {
    /// The fastest integer tile that goes with an f32 kernel choice (an AVX-512 machine gets the
    /// AVX-512 VNNI tile if it has VNNI; natively `SHOAL_INT_TILE` = a [`tile_name`]
    /// (Self::tile_name) picks another available tile, for benchmarks).
    pub fn for_isa(isa: Isa) -> QIsa {
        #[cfg(not(target_family = "wasm"))]
        if isa != Isa::Scalar
            && let Ok(want) = std::env::var("SHOAL_INT_TILE")
            && let Some(q) = Self::available()
                .into_iter()
                .find(|q| q.tile_name() == want)
        {
            return q;
        }
        match isa {
            Isa::Scalar => QIsa::Scalar,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if x86::has_avx512_vnni() => QIsa::Avx512Vnni,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => {
                if x86::has_avx_vnni() {
                    QIsa::AvxVnni
                } else if is_x86_feature_detected!("avx2") {
                    QIsa::Avx2
                } else {
                    QIsa::Scalar
                }
            }
            #[cfg(all(
                target_arch = "wasm32",
                any(target_feature = "simd128", feature = "wasm-simd")
            ))]
            Isa::Simd128 => QIsa::Simd128,
            #[cfg(all(target_arch = "wasm32", feature = "wasm-relaxed-simd"))]
            Isa::Relaxed => QIsa::Simd128,
        }
    }

    /// Every integer tile this machine runs, slowest first.
    pub fn available() -> Vec<QIsa> {
        #[allow(unused_mut)]
        let mut v = vec![QIsa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") {
                v.push(QIsa::Avx2);
            }
            if x86::has_avx_vnni() {
                v.push(QIsa::AvxVnni);
            }
            if x86::has_avx512_vnni() {
                v.push(QIsa::Avx512Vnni);
            }
        }
        #[cfg(all(
            target_arch = "wasm32",
            any(target_feature = "simd128", feature = "wasm-simd")
        ))]
        v.push(QIsa::Simd128);
        v
    }

    /// Rows per tile.
    pub fn mr(self) -> usize {
        match self {
            QIsa::Scalar => 4,
            #[cfg(target_arch = "x86_64")]
            QIsa::Avx2 | QIsa::AvxVnni => 8,
            #[cfg(target_arch = "x86_64")]
            QIsa::Avx512Vnni => avx512::MR,
            #[cfg(all(
                target_arch = "wasm32",
                any(target_feature = "simd128", feature = "wasm-simd")
            ))]
            QIsa::Simd128 => simd128::MR,
        }
    }

    /// Columns per tile, and per panel of a [`QPackedB`] packed for this tile.
    pub fn nr(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            QIsa::Avx512Vnni => avx512::NR,
            _ => NR,
        }
    }

    /// The tile's instruction set: `scalar`, `avx2`, `avx-vnni`, `avx512-vnni`, `simd128` (a
    /// kernel is named `{bits}-{tile}`, e.g. `int8-simd128`).
    pub fn tile_name(self) -> &'static str {
        match self {
            QIsa::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            QIsa::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            QIsa::AvxVnni => "avx-vnni",
            #[cfg(target_arch = "x86_64")]
            QIsa::Avx512Vnni => "avx512-vnni",
            #[cfg(all(
                target_arch = "wasm32",
                any(target_feature = "simd128", feature = "wasm-simd")
            ))]
            QIsa::Simd128 => "simd128",
        }
    }

    /// The kernel's name with a weight width: `int12-avx2`.
    pub fn name(self, bits: WeightBits) -> String {
        format!("{}-{}", bits.name(), self.tile_name())
    }
}

/// CPU feature checks for the x86-64 tiles.
#[cfg(target_arch = "x86_64")]
mod x86 {
    /// AVX-512F with VNNI and BW (the tile's `vpdpwssd zmm`, the quantizer's `vpmovdw`).
    pub(super) fn has_avx512_vnni() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    }

    /// AVX2 with the VEX-encoded VNNI instructions.
    pub(super) fn has_avx_vnni() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("avxvnni")
    }

    use core::arch::x86_64::*;

    /// `quantize_row`'s whole 16-float steps: scale, clamp, round to nearest even, narrow to
    /// `i16` in order (already the pair layout: even `k` in the low half). Returns the pairs
    /// written; the caller quantizes the tail. A NaN becomes 0, as in the scalar path.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX-512BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_row_avx512(
        row: &[f32],
        inv: f32,
        qmax: f32,
        out: &mut [u32],
    ) -> usize {
        let steps = (row.len() / 16).min(out.len() / 8);
        let (vinv, hi, lo) = (
            _mm512_set1_ps(inv),
            _mm512_set1_ps(qmax),
            _mm512_set1_ps(-qmax),
        );
        for s in 0..steps {
            // SAFETY: s < steps: 16 floats of `row` from 16·s and 8 pairs of `out` from 8·s.
            unsafe {
                let x = _mm512_mul_ps(_mm512_loadu_ps(row.as_ptr().add(16 * s)), vinv);
                // max(lo, NaN) and min(hi, NaN) keep the NaN; its conversion (0x8000_0000)
                // narrows to 0.
                let x = _mm512_min_ps(hi, _mm512_max_ps(lo, x));
                let q = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    x,
                );
                let h = _mm512_cvtepi32_epi16(q);
                _mm256_storeu_si256(out.as_mut_ptr().add(8 * s) as *mut __m256i, h);
            }
        }
        8 * steps
    }

    /// `max_abs`'s whole 16-float steps folded into 8 lanes, NaNs skipped; returns the tail.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn max_abs_avx512(xs: &[f32]) -> (&[f32], [f32; 8]) {
        let steps = xs.len() / 16;
        let mut m = _mm512_setzero_ps();
        for s in 0..steps {
            // SAFETY: s < steps: 16 floats from 16·s are in `xs`. `max(x, m)` returns `m`
            // when `x` is NaN.
            unsafe {
                let x = _mm512_abs_ps(_mm512_loadu_ps(xs.as_ptr().add(16 * s)));
                m = _mm512_max_ps(x, m);
            }
        }
        let mut m16 = [0f32; 16];
        // SAFETY: m16 holds 16 floats.
        unsafe { _mm512_storeu_ps(m16.as_mut_ptr(), m) };
        let mut m8 = [0f32; 8];
        for (i, v) in m16.iter().enumerate() {
            m8[i % 8] = m8[i % 8].max(*v);
        }
        (&xs[16 * steps..], m8)
    }
}

/// A weight quantized per column and packed into `i16` pair panels, with its bias.
#[derive(Debug, Clone)]
pub struct QPackedB {
    isa: QIsa,
    bits: WeightBits,
    k: usize,
    n: usize,
    data: Vec<i16>,
    /// Column scales, zero past `n` (padded to whole panels).
    scale: Vec<f32>,
    /// Bias (zero if none), zero past `n`.
    bias: Vec<f32>,
}

impl QPackedB {
    /// Quantize and pack the row-major `k × n` matrix `src` (and `bias`, if any).
    pub fn from_row_major(
        isa: QIsa,
        bits: WeightBits,
        src: &[f32],
        k: usize,
        n: usize,
        bias: Option<&[f32]>,
    ) -> Self {
        assert!(src.len() >= k * n, "qpack: source too short");
        assert!(bias.is_none_or(|b| b.len() >= n), "qpack: bias too short");
        let nr = isa.nr();
        let panels = n.div_ceil(nr);
        let k2 = k.div_ceil(2);
        let qmax = bits.qmax();
        let mut scale = vec![0f32; panels * nr];
        let mut padded_bias = vec![0f32; panels * nr];
        for j in 0..n {
            let max = (0..k).fold(0f32, |m, p| m.max(src[p * n + j].abs()));
            scale[j] = max / qmax;
            padded_bias[j] = bias.map_or(0.0, |b| b[j]);
        }
        let mut data = vec![0i16; panels * k2 * 2 * nr];
        for (panel, out) in data.chunks_exact_mut(k2 * 2 * nr).enumerate() {
            for j in panel * nr..(panel * nr + nr).min(n) {
                let inv = if scale[j] > 0.0 { 1.0 / scale[j] } else { 0.0 };
                for p in 0..k {
                    out[(p / 2) * 2 * nr + (j - panel * nr) * 2 + p % 2] =
                        quantize(src[p * n + j], inv, qmax);
                }
            }
        }
        Self {
            isa,
            bits,
            k,
            n,
            data,
            scale,
            bias: padded_bias,
        }
    }

    /// Rows of the weight: the inner dimension `k`, unpadded (the panels round it up to even).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of the weight (the output width, before padding to whole panels).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The tile this packing was made for; its [`mr`](QIsa::mr) is the row padding `A` gets.
    pub fn isa(&self) -> QIsa {
        self.isa
    }

    /// How many bits each quantized weight keeps (sets the `i32` chunk depth).
    pub fn bits(&self) -> WeightBits {
        self.bits
    }

    /// Number of [`QIsa::nr`]-column panels (`n` rounded up to whole panels, divided by the
    /// panel width).
    pub fn panels(&self) -> usize {
        self.n.div_ceil(self.isa.nr())
    }

    /// The quantized value of `B(p, j)` (read back from the panels; tests).
    pub fn quantized(&self, p: usize, j: usize) -> i16 {
        let (k2, nr) = (self.k.div_ceil(2), self.isa.nr());
        let panel = j / nr;
        self.data[panel * k2 * 2 * nr + (p / 2) * 2 * nr + (j % nr) * 2 + p % 2]
    }

    /// Column `j`'s scale.
    pub fn scale(&self, j: usize) -> f32 {
        self.scale[j]
    }
}

/// `round(x · inv)` clamped to `[-qmax, qmax]`.
#[inline(always)]
fn quantize(x: f32, inv: f32, qmax: f32) -> i16 {
    (x * inv).round_ties_even().clamp(-qmax, qmax) as i16
}

/// `A` quantized per row (kept between calls).
#[derive(Debug, Default)]
pub struct QuantA {
    /// Rows of `k2` pairs (`u32` = two `i16`, the even `k` in the low half).
    data: Vec<u32>,
    /// Row scales.
    scale: Vec<f32>,
    m: usize,
    k: usize,
    qmax: f32,
}

impl QuantA {
    /// Quantize rows `0..m` of `a` (row stride `lda`, `k` columns); rows are padded with zeros
    /// to a multiple of `mr`.
    pub fn quantize(&mut self, m: usize, a: &[f32], lda: usize, k: usize, mr: usize) {
        let (data, scale) = self.prepare(m, a, lda, k, mr);
        quantize_rows(0, a, lda, k, data, scale);
    }

    /// Size the buffers for `m` rows of `k` (checking `a` covers them) and return the first
    /// `m` rows' pairs and scales, zeroed, for [`quantize_rows`] (callers may split them by
    /// rows and quantize the pieces in parallel).
    pub fn prepare(
        &mut self,
        m: usize,
        a: &[f32],
        lda: usize,
        k: usize,
        mr: usize,
    ) -> (&mut [u32], &mut [f32]) {
        assert!(lda >= k, "quantize: stride shorter than a row");
        assert!(
            m == 0 || k == 0 || a.len() >= (m - 1) * lda + k,
            "quantize: A too short"
        );
        let k2 = k.div_ceil(2);
        let rows = m.div_ceil(mr.max(1)) * mr.max(1);
        self.m = m;
        self.k = k;
        self.qmax = QMAX_A;
        self.data.clear();
        self.data.resize(rows * k2, 0);
        self.scale.clear();
        self.scale.resize(rows, 0.0);
        (&mut self.data[..m * k2], &mut self.scale[..m])
    }

    /// The quantized value of `A(i, p)` (tests).
    pub fn quantized(&self, i: usize, p: usize) -> i16 {
        let w = self.data[i * self.k.div_ceil(2) + p / 2];
        (if p.is_multiple_of(2) { w } else { w >> 16 }) as u16 as i16
    }

    /// Row `i`'s scale.
    pub fn scale(&self, i: usize) -> f32 {
        self.scale[i]
    }
}

/// Quantize `scale.len()` rows of `a` from row `first` (stride `lda`, `k` columns) into `data`
/// (`⌈k/2⌉` pairs per row) and `scale`: a piece of what [`QuantA::prepare`] returned.
#[cfg_attr(
    all(target_arch = "wasm32", feature = "wasm-simd"),
    target_feature(enable = "simd128")
)]
pub fn quantize_rows(
    first: usize,
    a: &[f32],
    lda: usize,
    k: usize,
    data: &mut [u32],
    scale: &mut [f32],
) {
    let k2 = k.div_ceil(2);
    for (r, (s, out)) in scale
        .iter_mut()
        .zip(data.chunks_exact_mut(k2.max(1)))
        .enumerate()
    {
        let i = first + r;
        let row = &a[i * lda..i * lda + k];
        let max = max_abs(row);
        *s = max / QMAX_A;
        let inv = if *s > 0.0 { 1.0 / *s } else { 0.0 };
        quantize_row(row, inv, QMAX_A, &mut out[..k2]);
    }
}

/// `out[q] = Q(row[2q]) | Q(row[2q+1]) << 16` with `Q(x) = round(x · inv)` clamped to
/// `[-qmax, qmax]` (`out` holds `⌈len/2⌉` pairs; an odd tail pairs with 0).
#[inline(always)]
fn quantize_row(row: &[f32], inv: f32, qmax: f32, out: &mut [u32]) {
    #[cfg(all(
        target_arch = "wasm32",
        any(target_feature = "simd128", feature = "wasm-simd")
    ))]
    let (row, out) = {
        use core::arch::wasm32::*;
        // 8 values (4 pairs) per step: scale, round to nearest even, clamp, convert, narrow to
        // i16 (already the pair layout: even k in the low half).
        let steps = (row.len() / 8).min(out.len() / 4);
        let (vinv, hi, lo) = (f32x4_splat(inv), f32x4_splat(qmax), f32x4_splat(-qmax));
        let q = |x: v128| {
            i32x4_trunc_sat_f32x4(f32x4_max(
                lo,
                f32x4_min(hi, f32x4_nearest(f32x4_mul(x, vinv))),
            ))
        };
        for s in 0..steps {
            // SAFETY: s < steps: 8 floats of `row` from 8·s and 4 pairs of `out` from 4·s exist
            // (unaligned v128 loads and stores are allowed in wasm).
            unsafe {
                let x0 = v128_load(row.as_ptr().add(8 * s) as *const v128);
                let x1 = v128_load(row.as_ptr().add(8 * s + 4) as *const v128);
                v128_store(
                    out.as_mut_ptr().add(4 * s) as *mut v128,
                    i16x8_narrow_i32x4(q(x0), q(x1)),
                );
            }
        }
        (&row[8 * steps..], &mut out[4 * steps..])
    };
    #[cfg(target_arch = "x86_64")]
    let (row, out) = if x86::has_avx512_vnni() {
        // SAFETY: the CPU has AVX-512F and BW (checked just above).
        let done = unsafe { x86::quantize_row_avx512(row, inv, qmax, out) };
        (&row[2 * done..], &mut out[done..])
    } else {
        (row, out)
    };
    let mut pairs = row.chunks_exact(2);
    for (o, p) in out.iter_mut().zip(&mut pairs) {
        let lo = quantize(p[0], inv, qmax) as u16 as u32;
        let hi = quantize(p[1], inv, qmax) as u16 as u32;
        *o = lo | (hi << 16);
    }
    if let ([last], Some(o)) = (pairs.remainder(), out.get_mut(row.len() / 2)) {
        *o = quantize(*last, inv, qmax) as u16 as u32;
    }
}

/// `max |x|` with 8 independent lanes (vectorises); NaNs are ignored.
#[inline(always)]
fn max_abs(xs: &[f32]) -> f32 {
    #[cfg(all(
        target_arch = "wasm32",
        any(target_feature = "simd128", feature = "wasm-simd")
    ))]
    let (xs, mut m8) = {
        use core::arch::wasm32::*;
        // `pmax(m, x)` keeps `m` unless `m < x`: a NaN `x` is skipped, as `f32::max` does.
        let (mut m0, mut m1) = (f32x4_splat(0.0), f32x4_splat(0.0));
        let steps = xs.len() / 8;
        for s in 0..steps {
            // SAFETY: s < steps: 8 floats from 8·s are in `xs`.
            unsafe {
                let x0 = v128_load(xs.as_ptr().add(8 * s) as *const v128);
                let x1 = v128_load(xs.as_ptr().add(8 * s + 4) as *const v128);
                m0 = f32x4_pmax(m0, f32x4_abs(x0));
                m1 = f32x4_pmax(m1, f32x4_abs(x1));
            }
        }
        let mut m8 = [0f32; 8];
        // SAFETY: m8 holds 8 floats.
        unsafe {
            v128_store(m8.as_mut_ptr() as *mut v128, m0);
            v128_store(m8.as_mut_ptr().add(4) as *mut v128, m1);
        }
        (&xs[8 * steps..], m8)
    };
    #[cfg(target_arch = "x86_64")]
    let (xs, mut m8) = if x86::has_avx512_vnni() {
        // SAFETY: the CPU has AVX-512F (checked just above).
        unsafe { x86::max_abs_avx512(xs) }
    } else {
        (xs, [0f32; 8])
    };
    #[cfg(not(any(
        target_arch = "x86_64",
        all(
            target_arch = "wasm32",
            any(target_feature = "simd128", feature = "wasm-simd")
        )
    )))]
    let mut m8 = [0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (m, v) in m8.iter_mut().zip(c) {
            *m = m.max(v.abs());
        }
    }
    chunks
        .remainder()
        .iter()
        .map(|v| v.abs())
        .chain(m8)
        .fold(0f32, f32::max)
}

/// `c[i*ldc + j] = bias[j] + Σ_p A(i, p)·B(p, j)` with both quantized, for `i < m`, `j < b.n()`:
/// quantizes `a` into `qa` (reused between calls), then multiplies.
#[allow(clippy::too_many_arguments)]
pub fn qgemm(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &QPackedB,
    c: &mut [f32],
    ldc: usize,
    qa: &mut QuantA,
) {
    if m == 0 || b.n == 0 {
        return;
    }
    qa.quantize(m, a, lda, b.k, b.isa.mr());
    check(m, qa, b, c.len(), ldc);
    // SAFETY: `check` proved every index the block touches is in bounds; one caller, one block.
    unsafe { qgemm_block(0..m, 0..b.panels(), qa, b, c.as_mut_ptr(), ldc) }
}

/// Panics unless `qa` holds `m` rows of `b.k()` and `C` covers `m × b.n()` with stride `ldc`.
pub fn check(m: usize, qa: &QuantA, b: &QPackedB, c_len: usize, ldc: usize) {
    assert!(
        qa.m == m && qa.k == b.k,
        "qgemm: A quantized for another shape"
    );
    assert!(ldc >= b.n, "qgemm: stride shorter than a row");
    assert!(c_len >= (m - 1) * ldc + b.n, "qgemm: C too short");
}

/// Rows `rows` × panels `panels` of `C` from a quantized `A`.
///
/// # Safety
/// `check(m, qa, b, len(c), ldc)` must hold with `rows.end <= m`, `rows.start` a multiple of
/// `b.isa().mr()`, `panels.end <= b.panels()`, and no one else may access this block of `C`
/// meanwhile.
pub unsafe fn qgemm_block(
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
    qa: &QuantA,
    b: &QPackedB,
    c: *mut f32,
    ldc: usize,
) {
    let (isa, n) = (b.isa, b.n);
    let (mr, nr) = (isa.mr(), isa.nr());
    let k2 = b.k.div_ceil(2);
    let chunk = b.bits.chunk_pairs().min(KC2);
    debug_assert!(rows.start.is_multiple_of(mr));
    let mut tile = [0f32; MR_MAX * NR_MAX];
    for i0 in (rows.start..rows.end).step_by(MC) {
        let i1 = (i0 + MC).min(rows.end);
        // `k` in chunks: each chunk's i32 sums cannot overflow, and its slice of a panel stays
        // in L1 while the block's rows stream past. The first chunk writes `C` (bias included;
        // an empty `k` still writes the bias), the others add to it.
        let mut q0 = 0;
        loop {
            let q1 = (q0 + chunk).min(k2);
            let add = q0 > 0;
            for panel in panels.clone() {
                let j0 = panel * nr;
                let cols = nr.min(n - j0);
                // SAFETY: panel < panels() and q0 ≤ k2: the panel's pairs from q0, its scales
                // and bias are in bounds.
                let bp = unsafe { b.data.as_ptr().add(panel * k2 * 2 * nr + q0 * 2 * nr) };
                let sb = unsafe { b.scale.as_ptr().add(j0) };
                let bias = unsafe { b.bias.as_ptr().add(j0) };
                let mut i = i0;
                while i < i1 {
                    let r = mr.min(i1 - i);
                    // SAFETY: rows i..i+mr of the quantized A exist (padded to a multiple of
                    // mr), pairs q0..q1 of each.
                    let ap = unsafe { qa.data.as_ptr().add(i * k2 + q0) };
                    let sa = unsafe { qa.scale.as_ptr().add(i) };
                    // SAFETY: rows i..i+r, columns j0..j0+cols of C are ours.
                    let cp = unsafe { c.add(i * ldc + j0) };
                    if r == mr && cols == nr {
                        unsafe { micro(isa, q1 - q0, ap, k2, bp, sa, sb, bias, add, cp, ldc) };
                    } else {
                        // An edge tile: through `tile`, holding C's current values when adding.
                        for rr in 0..r {
                            for jj in 0..cols {
                                tile[rr * nr + jj] = if add {
                                    unsafe { *cp.add(rr * ldc + jj) }
                                } else {
                                    0.0
                                };
                            }
                        }
                        let t = tile.as_mut_ptr();
                        unsafe { micro(isa, q1 - q0, ap, k2, bp, sa, sb, bias, add, t, nr) };
                        for rr in 0..r {
                            for jj in 0..cols {
                                unsafe { *cp.add(rr * ldc + jj) = tile[rr * nr + jj] };
                            }
                        }
                    }
                    i += r;
                }
            }
            q0 = q1;
            if q0 >= k2 {
                break;
            }
        }
    }
}

/// One full `mr × nr` tile over `k2` pairs: `C = Σ_q A(q)·B(q) · sa · sb + bias`, or, with
/// `add`, `C += Σ_q A(q)·B(q) · sa · sb` (a later `k` chunk).
///
/// # Safety
/// `a` readable for `mr` rows (stride `lda` pairs) × `k2` pairs; `b` for `k2 × 2·nr`; `sa` for
/// `mr`, `sb` and `bias` for `nr`; `c` writable for `mr` rows (stride `ldc`) × `nr`. The ISA must
/// be available.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn micro(
    isa: QIsa,
    k2: usize,
    a: *const u32,
    lda: usize,
    b: *const i16,
    sa: *const f32,
    sb: *const f32,
    bias: *const f32,
    add: bool,
    c: *mut f32,
    ldc: usize,
) {
    unsafe {
        match isa {
            QIsa::Scalar => scalar::tile(k2, a, lda, b, sa, sb, bias, add, c, ldc),
            #[cfg(target_arch = "x86_64")]
            QIsa::Avx2 => avx2::tile(k2, a, lda, b, sa, sb, bias, add, c, ldc),
            #[cfg(target_arch = "x86_64")]
            QIsa::AvxVnni => avx2::tile_vnni(k2, a, lda, b, sa, sb, bias, add, c, ldc),
            #[cfg(target_arch = "x86_64")]
            QIsa::Avx512Vnni => avx512::tile(k2, a, lda, b, sa, sb, bias, add, c, ldc),
            #[cfg(all(
                target_arch = "wasm32",
                any(target_feature = "simd128", feature = "wasm-simd")
            ))]
            QIsa::Simd128 => simd128::tile(k2, a, lda, b, sa, sb, bias, add, c, ldc),
        }
    }
}

mod scalar {
    use super::NR;
    const MR: usize = 4;

    /// # Safety
    /// See `micro`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn tile(
        k2: usize,
        a: *const u32,
        lda: usize,
        b: *const i16,
        sa: *const f32,
        sb: *const f32,
        bias: *const f32,
        add: bool,
        c: *mut f32,
        ldc: usize,
    ) {
        unsafe {
            let mut acc = [[0i32; NR]; MR];
            for q in 0..k2 {
                let bq = std::slice::from_raw_parts(b.add(q * 2 * NR), 2 * NR);
                for (r, row) in acc.iter_mut().enumerate() {
                    let w = *a.add(r * lda + q);
                    let (a0, a1) = (
                        i32::from(w as u16 as i16),
                        i32::from((w >> 16) as u16 as i16),
                    );
                    for (j, v) in row.iter_mut().enumerate() {
                        *v += a0 * i32::from(bq[2 * j]) + a1 * i32::from(bq[2 * j + 1]);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                let s = *sa.add(r);
                for (j, v) in row.iter().enumerate() {
                    let o = c.add(r * ldc + j);
                    let base = if add { *o } else { *bias.add(j) };
                    *o = *v as f32 * (s * *sb.add(j)) + base;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::*;
    const MR: usize = 8;

    /// # Safety
    /// See `micro`; the CPU must have AVX2.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn tile(
        k2: usize,
        a: *const u32,
        lda: usize,
        b: *const i16,
        sa: *const f32,
        sb: *const f32,
        bias: *const f32,
        add: bool,
        c: *mut f32,
        ldc: usize,
    ) {
        // SAFETY: per this function's contract; `vpmaddwd` + `vpaddd` need only AVX2.
        unsafe {
            let acc = sums(k2, a, lda, b, |v, av, bv| {
                _mm256_add_epi32(v, _mm256_madd_epi16(av, bv))
            });
            store(&acc, sa, sb, bias, add, c, ldc);
        }
    }

    /// [`tile`] with AVX-VNNI: `vpdpwssd` multiplies the pairs and accumulates in one
    /// instruction (no `i32` overflow check either way: the chunk depth rules it out).
    ///
    /// # Safety
    /// See `micro`; the CPU must have AVX2 and AVX-VNNI.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,avxvnni")]
    pub(crate) unsafe fn tile_vnni(
        k2: usize,
        a: *const u32,
        lda: usize,
        b: *const i16,
        sa: *const f32,
        sb: *const f32,
        bias: *const f32,
        add: bool,
        c: *mut f32,
        ldc: usize,
    ) {
        // SAFETY: per this function's contract; the CPU has AVX-VNNI.
        unsafe {
            let acc = sums(k2, a, lda, b, |v, av, bv| {
                _mm256_dpwssd_avx_epi32(v, av, bv)
            });
            store(&acc, sa, sb, bias, add, c, ldc);
        }
    }

    /// The 8 × 8 `i32` sums over `k2` pairs, `step(acc, a pair splatted, B's pair-row)` per
    /// row and pair (inlined into each tile, so it runs with that tile's target features).
    ///
    /// # Safety
    /// As `micro` for `a` and `b`; the caller's target features must cover `step`.
    #[inline(always)]
    unsafe fn sums(
        k2: usize,
        a: *const u32,
        lda: usize,
        b: *const i16,
        step: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
    ) -> [__m256i; MR] {
        unsafe {
            let mut acc = [_mm256_setzero_si256(); MR];
            for q in 0..k2 {
                let bv = _mm256_loadu_si256(b.add(q * 16) as *const __m256i);
                for (r, v) in acc.iter_mut().enumerate() {
                    let av = _mm256_set1_epi32(*a.add(r * lda + q) as i32);
                    *v = step(*v, av, bv);
                }
            }
            acc
        }
    }

    /// `C = acc · sa · sb + (bias, or C itself when adding)`, 8 rows × 8 columns.
    #[inline(always)]
    unsafe fn store(
        acc: &[__m256i; MR],
        sa: *const f32,
        sb: *const f32,
        bias: *const f32,
        add: bool,
        c: *mut f32,
        ldc: usize,
    ) {
        unsafe {
            let (sbv, bv) = (_mm256_loadu_ps(sb), _mm256_loadu_ps(bias));
            for (r, v) in acc.iter().enumerate() {
                let s = _mm256_mul_ps(_mm256_set1_ps(*sa.add(r)), sbv);
                let base = if add {
                    _mm256_loadu_ps(c.add(r * ldc))
                } else {
                    bv
                };
                let out = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(*v), s), base);
                _mm256_storeu_ps(c.add(r * ldc), out);
            }
        }
    }
}

/// The AVX-512 VNNI tile: 12 rows × 32 columns (two `zmm` of 16 `i32` per row: 24 accumulators,
/// two `B` loads and 12 broadcasts per 24 `vpdpwssd`), like the f32 AVX-512 tile's 12×32.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::*;
    pub(crate) const MR: usize = 12;
    pub(crate) const NR: usize = 32;

    /// # Safety
    /// See `micro`; the CPU must have AVX-512F and AVX-512 VNNI.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(crate) unsafe fn tile(
        k2: usize,
        a: *const u32,
        lda: usize,
        b: *const i16,
        sa: *const f32,
        sb: *const f32,
        bias: *const f32,
        add: bool,
        c: *mut f32,
        ldc: usize,
    ) {
        unsafe {
            let mut acc = [[_mm512_setzero_si512(); 2]; MR];
            for q in 0..k2 {
                let b0 = _mm512_loadu_si512(b.add(q * 2 * NR) as *const __m512i);
                let b1 = _mm512_loadu_si512(b.add(q * 2 * NR + 32) as *const __m512i);
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_epi32(*a.add(r * lda + q) as i32);
                    row[0] = _mm512_dpwssd_epi32(row[0], av, b0);
                    row[1] = _mm512_dpwssd_epi32(row[1], av, b1);
                }
            }
            let (sb0, sb1) = (_mm512_loadu_ps(sb), _mm512_loadu_ps(sb.add(16)));
            let (bias0, bias1) = (_mm512_loadu_ps(bias), _mm512_loadu_ps(bias.add(16)));
            for (r, row) in acc.iter().enumerate() {
                let s = _mm512_set1_ps(*sa.add(r));
                let (s0, s1) = (_mm512_mul_ps(s, sb0), _mm512_mul_ps(s, sb1));
                let o = c.add(r * ldc);
                let (base0, base1) = if add {
                    (_mm512_loadu_ps(o), _mm512_loadu_ps(o.add(16)))
                } else {
                    (bias0, bias1)
                };
                let c0 = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(row[0]), s0), base0);
                let c1 = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(row[1]), s1), base1);
                _mm512_storeu_ps(o, c0);
                _mm512_storeu_ps(o.add(16), c1);
            }
        }
    }
}

#[cfg(all(
    target_arch = "wasm32",
    any(target_feature = "simd128", feature = "wasm-simd")
))]
mod simd128 {
    use core::arch::wasm32::*;
    pub(crate) const MR: usize = 4;

    /// # Safety
    /// See `micro`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "simd128")]
    pub(crate) unsafe fn tile(
        k2: usize,
        a: *const u32,
        lda: usize,
        b: *const i16,
        sa: *const f32,
        sb: *const f32,
        bias: *const f32,
        add: bool,
        c: *mut f32,
        ldc: usize,
    ) {
        unsafe {
            let mut acc = [[i32x4_splat(0); 2]; MR];
            for q in 0..k2 {
                let b0 = v128_load(b.add(q * 16) as *const v128);
                let b1 = v128_load(b.add(q * 16 + 8) as *const v128);
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = v128_load32_splat(a.add(r * lda + q));
                    row[0] = i32x4_add(row[0], i32x4_dot_i16x8(av, b0));
                    row[1] = i32x4_add(row[1], i32x4_dot_i16x8(av, b1));
                }
            }
            let (sb0, sb1) = (
                v128_load(sb as *const v128),
                v128_load(sb.add(4) as *const v128),
            );
            let (bias0, bias1) = (
                v128_load(bias as *const v128),
                v128_load(bias.add(4) as *const v128),
            );
            for (r, row) in acc.iter().enumerate() {
                let s = f32x4_splat(*sa.add(r));
                let (s0, s1) = (f32x4_mul(s, sb0), f32x4_mul(s, sb1));
                let (base0, base1) = if add {
                    (
                        v128_load(c.add(r * ldc) as *const v128),
                        v128_load(c.add(r * ldc + 4) as *const v128),
                    )
                } else {
                    (bias0, bias1)
                };
                let c0 = f32x4_add(f32x4_mul(f32x4_convert_i32x4(row[0]), s0), base0);
                let c1 = f32x4_add(f32x4_mul(f32x4_convert_i32x4(row[1]), s1), base1);
                v128_store(c.add(r * ldc) as *mut v128, c0);
                v128_store(c.add(r * ldc + 4) as *mut v128, c1);
            }
        }
    }
}

/// Check `isa`'s int8 GEMM on odd shapes (every m, n in 1..=33 with k in a spread over 1..=33,
/// then MiniLM-sized shapes and strides): quantized values within half a step of the inputs,
/// `C` equal to the exact integer product of the quantized values (scaled, plus bias) up to f32
/// rounding, nothing written outside `C`'s `m × n`. Returns the number of cases.
pub fn self_test(isa: QIsa, bits: WeightBits) -> Result<usize, String> {
    let mut cases = 0;
    for m in 1..=33 {
        for k in (1..=33).filter(|k| k % 4 == 1 || *k >= 32) {
            for n in (1..=33).filter(|n| n % 2 == 1 || *n >= 30 || *n == 8) {
                check_case(isa, bits, m, k, n, k, n)?;
                cases += 1;
            }
        }
    }
    for &(m, k, n) in &[
        (1, 384, 384),
        (12, 384, 1152),
        (37, 1536, 384),
        (100, 384, 1536),
        (131, 300, 70),
        (200, 257, 33),
        (5, 513, 45),
        (9, 2100, 17),
    ] {
        check_case(isa, bits, m, k, n, k, n)?;
        check_case(isa, bits, m, k, n, k + 7, n + 3)?;
        cases += 2;
    }
    // Every product at full range, deeper than MiniLM: an i32 sum over too long a chunk wraps.
    for k in [1536, 2100] {
        let (m, n) = (5, 11);
        // Row i is all ±2, column j all ±0.5: every product in a sum has the same sign.
        let a: Vec<f32> = (0..m * k).map(|x| [2.0, -2.0][(x / k) % 2]).collect();
        let b: Vec<f32> = (0..k * n).map(|x| [0.5, -0.5][(x % n) % 2]).collect();
        let packed = QPackedB::from_row_major(isa, bits, &b, k, n, None);
        let mut c = vec![SENTINEL; m * n + 5];
        let mut qa = QuantA::default();
        qgemm(m, &a, k, &packed, &mut c, n, &mut qa);
        verify(m, &a, k, &b, &vec![0.0; n], &packed, &qa, &c, n)?;
        cases += 1;
    }
    Ok(cases)
}

fn check_case(
    isa: QIsa,
    bits: WeightBits,
    m: usize,
    k: usize,
    n: usize,
    lda: usize,
    ldc: usize,
) -> Result<(), String> {
    let seed = (m * 131 + k * 7 + n) as u64;
    let mut a = crate::kernel::values(m * lda + 3, seed);
    // Rows of very different magnitudes (per-row scales), one all-zero row.
    for i in 0..m {
        let f = [1.0, 0.01, 30.0, 0.0][i % 4];
        a[i * lda..i * lda + k].iter_mut().for_each(|v| *v *= f);
    }
    let mut braw = crate::kernel::values(k * n + 1, (n * 17 + k) as u64);
    for p in 0..k {
        for j in 0..n {
            braw[p * n + j] *= [1.0, 0.002, 5.0][j % 3];
        }
    }
    let bias = crate::kernel::values(n, 99);
    let packed = QPackedB::from_row_major(isa, bits, &braw, k, n, Some(&bias));
    let mut c = vec![SENTINEL; m * ldc + 5];
    let mut qa = QuantA::default();
    qgemm(m, &a, lda, &packed, &mut c, ldc, &mut qa);
    verify(m, &a, lda, &braw, &bias, &packed, &qa, &c, ldc)
}

const SENTINEL: f32 = 12345.0;

/// `C` (and the quantized operands) against the inputs; see [`self_test`].
#[allow(clippy::too_many_arguments)]
fn verify(
    m: usize,
    a: &[f32],
    lda: usize,
    braw: &[f32],
    bias: &[f32],
    packed: &QPackedB,
    qa: &QuantA,
    c: &[f32],
    ldc: usize,
) -> Result<(), String> {
    let (k, n) = (packed.k, packed.n);
    let name = packed.isa.name(packed.bits);
    let qmax = packed.bits.qmax();
    let sentinel = SENTINEL;
    for j in 0..n {
        let s = packed.scale(j);
        for p in 0..k {
            let q = packed.quantized(p, j);
            if f32::from(q).abs() > qmax
                || (f64::from(q) * f64::from(s) - f64::from(braw[p * n + j])).abs()
                    > 0.501 * f64::from(s)
            {
                return Err(format!(
                    "{name} m{m} k{k} n{n}: B({p},{j}) = {} quantized to {q} × {s}",
                    braw[p * n + j]
                ));
            }
        }
    }
    for i in 0..m {
        let s = qa.scale(i);
        for p in 0..k {
            let q = qa.quantized(i, p);
            if f32::from(q).abs() > qa.qmax
                || (f64::from(q) * f64::from(s) - f64::from(a[i * lda + p])).abs()
                    > 0.501 * f64::from(s) + 1e-30
            {
                return Err(format!(
                    "{name} m{m} k{k} n{n}: A({i},{p}) = {} quantized to {q} × {s}",
                    a[i * lda + p]
                ));
            }
        }
    }
    for i in 0..m {
        for j in 0..ldc {
            let got = c[i * ldc + j];
            if j >= n {
                if got != sentinel {
                    return Err(format!("{name}: m{m} k{k} n{n} wrote past n at ({i},{j})"));
                }
                continue;
            }
            let terms =
                (0..k).map(|p| i64::from(qa.quantized(i, p)) * i64::from(packed.quantized(p, j)));
            let sum: i64 = terms.clone().sum();
            // f32 rounding of the chunk sums, relative to the terms' magnitude (chunks may cancel).
            let mass: u64 = terms.map(i64::unsigned_abs).sum();
            let scale = f64::from(qa.scale(i)) * f64::from(packed.scale(j));
            let want = sum as f64 * scale + f64::from(bias[j]);
            let tol = 1e-6 * (mass as f64 * scale + f64::from(bias[j]).abs() + 1e-3);
            if (f64::from(got) - want).abs() > tol {
                return Err(format!(
                    "{name} m{m} k{k} n{n} lda{lda} ldc{ldc} at ({i},{j}): {got} vs {want}"
                ));
            }
        }
    }
    if c[m * ldc..].iter().any(|&v| v != sentinel) {
        return Err(format!("{name}: m{m} k{k} n{n} wrote past m"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_integer_kernel_matches_the_exact_integer_product_on_odd_shapes() {
        let isas = QIsa::available();
        #[cfg(target_arch = "x86_64")]
        assert!(
            isas.len() >= 2,
            "this x86-64 machine should run AVX2: {isas:?}"
        );
        for isa in isas {
            for bits in [WeightBits::Int8, WeightBits::Int12] {
                let cases = self_test(isa, bits).unwrap();
                eprintln!("{}: {cases} shapes match", isa.name(bits));
            }
        }
    }

    #[test]
    fn quantized_products_stay_close_to_f32() {
        // The quantization error itself: relative error of C vs the f64 product of the
        // unquantized inputs, on MiniLM-sized shapes (k = 1536 runs int12 in 12 chunks).
        for (bits, bound) in [(WeightBits::Int8, 0.02), (WeightBits::Int12, 0.001)] {
            for (m, k, n) in [(64, 384, 96), (24, 1536, 40)] {
                let a = crate::kernel::values(m * k, 1);
                let b = crate::kernel::values(k * n, 2);
                let packed = QPackedB::from_row_major(QIsa::Scalar, bits, &b, k, n, None);
                let mut c = vec![0f32; m * n];
                qgemm(m, &a, k, &packed, &mut c, n, &mut QuantA::default());
                let (mut err, mut norm) = (0f64, 0f64);
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k)
                            .map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j]))
                            .sum();
                        err += (f64::from(c[i * n + j]) - want).powi(2);
                        norm += want * want;
                    }
                }
                let rel = (err / norm).sqrt();
                eprintln!("{} k{k}: relative error {rel:.2e}", bits.name());
                assert!(rel < bound, "{bits:?} k{k}: relative error {rel}");
            }
        }
    }

    #[test]
    fn a_wrong_int8_kernel_would_be_caught() {
        let (m, k, n) = (5, 20, 9);
        let a = crate::kernel::values(m * k, 4);
        let b = crate::kernel::values(k * n, 3);
        let bias = vec![0.5f32; n];
        let p = QPackedB::from_row_major(QIsa::Scalar, WeightBits::Int8, &b, k, n, Some(&bias));
        let mut qa = QuantA::default();
        let mut c = vec![SENTINEL; m * n + 5];
        qgemm(m, &a, k, &p, &mut c, n, &mut qa);
        verify(m, &a, k, &b, &bias, &p, &qa, &c, n).unwrap();
        // A wrong product, a wrongly quantized weight, a write past the end: each is caught.
        let mut bad = c.clone();
        bad[7] += 1e-3;
        assert!(verify(m, &a, k, &b, &bias, &p, &qa, &bad, n).is_err());
        let mut q = p.clone();
        q.data[3] += 2;
        assert!(verify(m, &a, k, &b, &bias, &q, &qa, &c, n).is_err());
        let mut bad = c.clone();
        bad[m * n] = 0.0;
        assert!(verify(m, &a, k, &b, &bias, &p, &qa, &bad, n).is_err());
    }
}
