//! The forward pass's f32 element-wise work and attention, written to vectorise (no libm
//! calls or bounds checks in the inner loops) and compiled again for AVX2+FMA / AVX-512 on
//! x86-64 and with `simd128` in wasm ([`shoal_math::multiversion!`]).

use shoal_math::{dot8, exp, sum8};

use crate::kernels::QK;

#[inline(always)]
fn quantize_generic(x: &[f32], q: &mut [i8], d: &mut [f32], isum: &mut [i32], ds: &mut [f32]) {
    for (((xs, qs), (d, is)), ds) in x
        .chunks_exact(QK)
        .zip(q.chunks_exact_mut(QK))
        .zip(d.iter_mut().zip(isum.iter_mut()))
        .zip(ds.iter_mut())
    {
        let mut m8 = [0f32; 8];
        for c in xs.chunks_exact(8) {
            for (m, v) in m8.iter_mut().zip(c) {
                let a = v.abs();
                // A select, not `f32::max` (its NaN rule blocks vectorisation in wasm).
                *m = if *m < a { a } else { *m };
            }
        }
        let amax = m8.iter().fold(0f32, |a, &b| if a < b { b } else { a });
        let dd = amax / 127.0;
        let id = if dd > 0.0 { 1.0 / dd } else { 0.0 };
        let mut s8 = [0i32; 8];
        for (qc, xc) in qs.chunks_exact_mut(8).zip(xs.chunks_exact(8)) {
            for ((o, &v), s) in qc.iter_mut().zip(xc).zip(s8.iter_mut()) {
                // Nearest, ties to even (ggml's x86 quantizer rounds the same way).
                let r = (v * id).round_ties_even() as i32;
                *o = r as i8;
                *s += r;
            }
        }
        let s: i32 = s8.iter().sum();
        *d = dd;
        *is = s;
        *ds = dd * s as f32;
    }
}

shoal_math::multiversion! {
    /// Quantize `x` (whole blocks of 32) to signed bytes in `[-127, 127]` with one scale per
    /// block `d`, the blocks' integer sums `isum` and `ds = d · isum`.
    pub fn quantize(x: &[f32], q: &mut [i8], d: &mut [f32], isum: &mut [i32], ds: &mut [f32]) => quantize_generic
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
    /// One head's attention over `len` cached positions: `keys`/`values` start at this head's
    /// slice of position 0 and step `stride` floats per position; `scores` has room for
    /// `len`; `out` (the head width, = `q.len()`) receives `softmax(q·Kᵀ·scale)·V`.
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
    ) => attend_generic
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_data;

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
        let mx = s.iter().cloned().fold(f64::MIN, f64::max);
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
    fn quantize_is_within_half_a_step_and_sums_match() {
        let x = test_data(96, 9, 5.0);
        let (mut q, mut d, mut is, mut ds) =
            (vec![0i8; 96], vec![0f32; 3], vec![0; 3], vec![0f32; 3]);
        quantize(&x, &mut q, &mut d, &mut is, &mut ds);
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
