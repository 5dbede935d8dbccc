//! Scaled dot-product attention of one head over one sequence: `out = softmax(Q·Kᵀ)·V`, `Q`
//! already scaled by `1/√d`, rows read in place from the fused QKV matrix (any row stride).
//!
//! Two paths, the same result up to f32 rounding:
//! - **AVX-512, head dimension 32** (MiniLM: 384 / 12): a dedicated kernel. `Kᵀ` is copied once
//!   into 16-column blocks; eight query rows at a time get their scores (8 independent FMA
//!   chains over `d`), softmax, then their context rows (16 accumulators over the keys, `V` rows
//!   read in place). No packing of `V`, no edge tiles: short sequences (12 tokens) were dominated by
//!   the generic path's per-call costs (packing two operands, a 12×32 tile for a 12×12 score
//!   matrix), ≈ 17 % of a short sentence's forward pass.
//! - **Everywhere else**: the packed GEMM ([`kernel`]) for `Q·Kᵀ` and `P·V`, softmax
//!   ([`ops::softmax`]) between.

// SIMD intrinsics and raw output pointers; every unsafe block states its bounds argument.
#![allow(unsafe_code)]

use crate::kernel::{self, Isa, PackedB};
use crate::ops;

/// Buffers one attention task reuses from head to head.
#[derive(Debug)]
pub struct Scratch {
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    isa: Isa,
    scores: Vec<f32>,
    /// `Kᵀ` in 16-key blocks (the AVX-512 path).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    kt: Vec<f32>,
    packed_kt: PackedB,
    packed_v: PackedB,
}

impl Scratch {
    /// Buffers for the kernels of `isa`.
    pub fn new(isa: Isa) -> Self {
        Self {
            isa,
            scores: Vec::new(),
            kt: Vec::new(),
            packed_kt: PackedB::new(isa),
            packed_v: PackedB::new(isa),
        }
    }
}

/// Which path [`head`] takes for head dimension `d` with `isa`: `"avx512-d32"` or `"gemm"`.
pub fn path(isa: Isa, d: usize) -> &'static str {
    if fast_path(isa, d) {
        "avx512-d32"
    } else {
        "gemm"
    }
}

fn fast_path(isa: Isa, d: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && d == avx512::D {
        return true;
    }
    let _ = (isa, d);
    false
}

/// Attention of one head: for each of the `len` query rows `i`, `out[i] = Σ_j softmax_j(q_i ·
/// k_j) · v_j`. Row `i` of `q`, `k`, `v` starts at `i · ld` (`d` values each); row `i` of the
/// output at `out + i · ldo`.
///
/// # Safety
/// `out` must be valid for writes of `len` rows (stride `ldo`) × `d` columns that no one else
/// reads or writes meanwhile. (`q`, `k`, `v` are checked: each must hold `(len - 1)·ld + d`
/// values.)
#[allow(clippy::too_many_arguments)]
pub unsafe fn head(
    len: usize,
    d: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    ld: usize,
    out: *mut f32,
    ldo: usize,
    s: &mut Scratch,
) {
    if len == 0 || d == 0 {
        return;
    }
    let need = (len - 1) * ld + d;
    assert!(
        ld >= d && q.len() >= need && k.len() >= need && v.len() >= need,
        "attention: Q, K or V too short"
    );
    #[cfg(target_arch = "x86_64")]
    if fast_path(s.isa, d) {
        // SAFETY: Isa::Avx512 is only ever chosen on a CPU with AVX-512F; Q, K, V checked
        // above, `out` per this function's contract.
        unsafe { avx512::head(len, q, k, v, ld, out, ldo, &mut s.kt, &mut s.scores) };
        return;
    }
    // Kᵀ: element (dim, token) = K[token, dim].
    s.packed_kt.pack(k, d, len, 1, ld);
    s.packed_v.pack(v, len, d, ld, 1);
    s.scores.resize(len * len, 0.0);
    kernel::gemm(len, q, ld, &s.packed_kt, None, &mut s.scores, len);
    for row in s.scores.chunks_exact_mut(len) {
        ops::softmax(row);
    }
    // SAFETY: the scores and packed V cover len × len and len × d; `out` per the contract.
    unsafe {
        kernel::gemm_block(
            0..len,
            0..s.packed_v.panels(),
            &s.scores,
            len,
            &s.packed_v,
            None,
            out,
            ldo,
        );
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::*;

    /// The head dimension this kernel handles.
    pub(super) const D: usize = 32;
    /// Query rows per step (8 independent FMA chains in the scores, 16 in the context).
    const R: usize = 8;
    /// Keys per score block (one `zmm`).
    const J: usize = 16;

    /// See [`super::head`]; `q`, `k`, `v` hold `(len - 1)·ld + 32` values, `len ≥ 1`.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `out` as in [`super::head`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn head(
        len: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        ld: usize,
        out: *mut f32,
        ldo: usize,
        kt: &mut Vec<f32>,
        scores: &mut Vec<f32>,
    ) {
        let lp = len.div_ceil(J) * J;
        // Kᵀ in blocks of J keys: block b, dim t holds keys b·J .. b·J + J (zero past len).
        kt.clear();
        kt.resize(D * lp, 0.0);
        for j in 0..len {
            let (b, x) = (j / J, j % J);
            for (t, &val) in k[j * ld..j * ld + D].iter().enumerate() {
                kt[b * D * J + t * J + x] = val;
            }
        }
        scores.clear();
        scores.resize(R * lp, 0.0);
        let mut i = 0;
        while i < len {
            let rows = R.min(len - i);
            // SAFETY: rows i..i+rows < len of q and v (checked by the caller), kt holds D·lp
            // and scores R·lp values; `out` rows i..i+rows per the contract.
            unsafe {
                scores_block(
                    rows,
                    &q[i * ld..(i + rows - 1) * ld + D],
                    ld,
                    kt,
                    lp,
                    scores,
                );
                for r in 0..rows {
                    crate::ops::softmax(&mut scores[r * lp..r * lp + len]);
                }
                context_block(rows, len, scores, lp, v, ld, out.add(i * ldo), ldo);
            }
            i += rows;
        }
    }

    /// `scores[r][j] = q_r · k_j` for `r < R`, every `j < lp` (padded keys score 0); rows past
    /// `rows` repeat the last query row (every row is computed, so the accumulators stay in
    /// registers: a row count known only at run time kept them on the stack).
    ///
    /// # Safety
    /// AVX-512F; `q` holds `rows ≥ 1` rows of D (stride `ld`), `kt` D·lp, `scores` R·lp.
    #[target_feature(enable = "avx512f")]
    unsafe fn scores_block(
        rows: usize,
        q: &[f32],
        ld: usize,
        kt: &[f32],
        lp: usize,
        scores: &mut [f32],
    ) {
        assert!(
            (1..=R).contains(&rows)
                && q.len() > (rows - 1) * ld + D - 1
                && kt.len() >= D * lp
                && scores.len() >= R * lp
        );
        let mut qrow = [q.as_ptr(); R];
        for (r, p) in qrow.iter_mut().enumerate() {
            // SAFETY: min(r, rows - 1) < rows: a row of q (checked above).
            *p = unsafe { q.as_ptr().add(r.min(rows - 1) * ld) };
        }
        for b in 0..lp / J {
            let kb = kt[b * D * J..].as_ptr();
            let mut acc = [_mm512_setzero_ps(); R];
            for t in 0..D {
                // SAFETY: t < D and block b < lp / J: inside kt.
                let kv = unsafe { _mm512_loadu_ps(kb.add(t * J)) };
                for (a, row) in acc.iter_mut().zip(&qrow) {
                    // SAFETY: `row` is a row of q, t < D.
                    let qv = unsafe { _mm512_set1_ps(*row.add(t)) };
                    *a = _mm512_fmadd_ps(qv, kv, *a);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                // SAFETY: r < R, b·J + J ≤ lp: inside scores.
                unsafe { _mm512_storeu_ps(scores.as_mut_ptr().add(r * lp + b * J), *a) };
            }
        }
    }

    /// `out[r] = Σ_{j < len} scores[r][j] · v_j` for `r < rows`.
    ///
    /// # Safety
    /// AVX-512F; `v` holds `len` rows of D (stride `ld`), `scores` R·lp; `out` writable for
    /// `rows` rows (stride `ldo`) of D.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn context_block(
        rows: usize,
        len: usize,
        scores: &[f32],
        lp: usize,
        v: &[f32],
        ld: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        assert!(
            rows <= R && len <= lp && scores.len() >= R * lp && v.len() > (len - 1) * ld + D - 1
        );
        let (sp, vp) = (scores.as_ptr(), v.as_ptr());
        // All R rows (past `rows` they repeat a computed row; see `scores_block`), stored only
        // up to `rows`.
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for j in 0..len {
            // SAFETY: j < len: row j of v holds D = 32 values.
            let (v0, v1) = unsafe {
                (
                    _mm512_loadu_ps(vp.add(j * ld)),
                    _mm512_loadu_ps(vp.add(j * ld + 16)),
                )
            };
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: r < R, j < len ≤ lp: inside scores.
                let p = unsafe { _mm512_set1_ps(*sp.add(r * lp + j)) };
                a[0] = _mm512_fmadd_ps(p, v0, a[0]);
                a[1] = _mm512_fmadd_ps(p, v1, a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            if r < rows {
                // SAFETY: r < rows: row r of out holds D values per the contract.
                unsafe {
                    _mm512_storeu_ps(out.add(r * ldo), a[0]);
                    _mm512_storeu_ps(out.add(r * ldo + 16), a[1]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::values;

    /// f64 attention of one head (the reference).
    fn reference(len: usize, d: usize, q: &[f32], k: &[f32], v: &[f32], ld: usize) -> Vec<f64> {
        let mut out = vec![0f64; len * d];
        for i in 0..len {
            let s: Vec<f64> = (0..len)
                .map(|j| {
                    (0..d)
                        .map(|t| f64::from(q[i * ld + t]) * f64::from(k[j * ld + t]))
                        .sum()
                })
                .collect();
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for t in 0..d {
                out[i * d + t] = (0..len)
                    .map(|j| e[j] / sum * f64::from(v[j * ld + t]))
                    .sum();
            }
        }
        out
    }

    #[test]
    fn every_path_matches_f64_attention_on_odd_lengths() {
        for isa in Isa::available() {
            for d in [32, 8, 33] {
                let mut s = Scratch::new(isa);
                for len in [1, 2, 3, 4, 5, 12, 15, 16, 17, 31, 33, 128, 130] {
                    let ld = 3 * d + 5;
                    let base = values(len * ld + 2 * d, (len * 7 + d) as u64);
                    let (q, k, v) = (&base[..], &base[d..], &base[2 * d..]);
                    let ldo = d + 3;
                    let mut out = vec![f32::NAN; len * ldo];
                    // Padding columns must stay untouched.
                    out.iter_mut().enumerate().for_each(|(x, o)| {
                        if x % ldo >= d {
                            *o = 7.0;
                        }
                    });
                    // SAFETY: out holds len rows of ldo ≥ d.
                    unsafe { head(len, d, q, k, v, ld, out.as_mut_ptr(), ldo, &mut s) };
                    let want = reference(len, d, q, k, v, ld);
                    for i in 0..len {
                        for t in 0..ldo {
                            let got = out[i * ldo + t];
                            if t >= d {
                                assert_eq!(got, 7.0, "{isa:?} d{d} len{len}: wrote padding");
                                continue;
                            }
                            let w = want[i * d + t];
                            assert!(
                                (f64::from(got) - w).abs() <= 1e-5 * (1.0 + w.abs()),
                                "{} {isa:?} d{d} len{len} ({i},{t}): {got} vs {w}",
                                path(isa, d)
                            );
                        }
                    }
                }
            }
        }
    }
}
