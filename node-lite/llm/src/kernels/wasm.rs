//! wasm kernels over packed groups of 4 rows (one `i32x4` lane per row), compiled with
//! `simd128` (crate feature `wasm-simd`, `#[target_feature]` on these functions only) and,
//! with feature `wasm-relaxed-simd`, relaxed SIMD.
//!
//! A tile is 4 rows × `T` tokens (`T` = 1..=4). Per block of 32 and token:
//! - **relaxed, U4**: 4 loads of 16 bytes, a mask and a shift give 8 registers of 4 rows × 4
//!   nibbles; each meets a 4-byte splat of the activations in one
//!   `i32x4.relaxed_dot_i8x16_i7x16_add_s` (the nibbles, `0..16`, are valid 7-bit operands,
//!   so the result is exact on every engine).
//! - **relaxed, I8** (Q8_0, Q5_0: signed bytes): each byte flipped to `q + 128` and split
//!   into its two nibbles, both valid 7-bit operands, so two relaxed dots per 16 bytes give
//!   `Σx·(q+128)` and the block's integer `128·Σx` takes the offset back out — exact, and
//!   fewer instructions than widening to i16 (the tied output head of a small model is a
//!   third of the bytes read per token).
//! - **simd128** (and the other 8-bit formats on both builds: Q5_1 with its minimum,
//!   Q6_K with a scale per 16): nibbles or bytes widened to i16 (rows 0–1
//!   and rows 2–3), activations splatted as `[x0..x3, x0..x3]` in i16; `i32x4.dot_i16x8_s`
//!   leaves two partial sums per row, added pairwise at the block's end.

use core::arch::wasm32::*;

use super::packed::{Acts, Format, PackedMat};
use super::tiles::{PairFn, Tile, TileFn, TileKernels, gemm_tiles};
use super::{QK, Tier};
use crate::par::SharedMut;

/// `[A0+A1, A2+A3, B0+B1, B2+B3]`: the rows' sums from two pair-sum registers.
#[inline]
#[target_feature(enable = "simd128")]
fn pairs(a: v128, b: v128) -> v128 {
    i32x4_add(
        i32x4_shuffle::<0, 2, 4, 6>(a, b),
        i32x4_shuffle::<1, 3, 5, 7>(a, b),
    )
}

/// Scale a block's integer row sums into the f32 accumulators.
#[inline]
#[target_feature(enable = "simd128")]
fn scale(acc: v128, s: v128, d: v128, dx: f32) -> v128 {
    f32x4_add(
        acc,
        f32x4_mul(f32x4_convert_i32x4(s), f32x4_mul(d, f32x4_splat(dx))),
    )
}

/// # Safety
/// `a` points at `nb` whole blocks of one U4 group, `T` tokens of activations and `T`
/// outputs of 4.
#[allow(clippy::needless_range_loop)] // t indexes several tile arrays at once
#[target_feature(enable = "simd128")]
unsafe fn u4_128<const T: usize>(a: &Tile) {
    unsafe {
        let mask = u8x16_splat(0x0F);
        let k = a.nb * QK;
        let mut acc = [f32x4_splat(0.0); T];
        let mut accm = [f32x4_splat(0.0); T];
        for b in 0..a.nb {
            let wq = a.q.add(b * 64);
            let mut sa = [i32x4_splat(0); T];
            let mut sb = [i32x4_splat(0); T];
            for j in 0..4 {
                let v = v128_load(wq.add(16 * j).cast());
                let lo = v128_and(v, mask);
                let hi = u8x16_shr(v, 4);
                let (lo01, lo23) = (u16x8_extend_low_u8x16(lo), u16x8_extend_high_u8x16(lo));
                let (hi01, hi23) = (u16x8_extend_low_u8x16(hi), u16x8_extend_high_u8x16(hi));
                for t in 0..T {
                    let xp = a.x.add(t * k + b * QK);
                    let xl = i16x8_extend_low_i8x16(v128_load32_splat(xp.add(4 * j).cast()));
                    let xh = i16x8_extend_low_i8x16(v128_load32_splat(xp.add(16 + 4 * j).cast()));
                    sa[t] = i32x4_add(sa[t], i32x4_dot_i16x8(lo01, xl));
                    sb[t] = i32x4_add(sb[t], i32x4_dot_i16x8(lo23, xl));
                    sa[t] = i32x4_add(sa[t], i32x4_dot_i16x8(hi01, xh));
                    sb[t] = i32x4_add(sb[t], i32x4_dot_i16x8(hi23, xh));
                }
            }
            let d = v128_load(a.d.add(b * 4).cast());
            let m = v128_load(a.m.add(b * 4).cast());
            for t in 0..T {
                acc[t] = scale(acc[t], pairs(sa[t], sb[t]), d, *a.ad.add(t * a.nb + b));
                accm[t] = f32x4_add(accm[t], f32x4_mul(m, f32x4_splat(*a.ads.add(t * a.nb + b))));
            }
        }
        for t in 0..T {
            v128_store(a.out.add(t * a.ld).cast(), f32x4_add(acc[t], accm[t]));
        }
    }
}

/// # Safety
/// As [`u4_128`].
#[cfg(any(target_feature = "relaxed-simd", feature = "wasm-relaxed-simd"))]
#[allow(clippy::needless_range_loop)] // t indexes several tile arrays at once
#[target_feature(enable = "simd128,relaxed-simd")]
unsafe fn u4_relaxed<const T: usize>(a: &Tile) {
    unsafe {
        let mask = u8x16_splat(0x0F);
        let k = a.nb * QK;
        let mut acc = [f32x4_splat(0.0); T];
        let mut accm = [f32x4_splat(0.0); T];
        for b in 0..a.nb {
            let wq = a.q.add(b * 64);
            let mut s = [i32x4_splat(0); T];
            for j in 0..4 {
                let v = v128_load(wq.add(16 * j).cast());
                let lo = v128_and(v, mask);
                let hi = u8x16_shr(v, 4);
                for t in 0..T {
                    let xp = a.x.add(t * k + b * QK);
                    let xl = v128_load32_splat(xp.add(4 * j).cast());
                    let xh = v128_load32_splat(xp.add(16 + 4 * j).cast());
                    s[t] = i32x4_relaxed_dot_i8x16_i7x16_add(xl, lo, s[t]);
                    s[t] = i32x4_relaxed_dot_i8x16_i7x16_add(xh, hi, s[t]);
                }
            }
            let d = v128_load(a.d.add(b * 4).cast());
            let m = v128_load(a.m.add(b * 4).cast());
            for t in 0..T {
                acc[t] = scale(acc[t], s[t], d, *a.ad.add(t * a.nb + b));
                accm[t] = f32x4_add(accm[t], f32x4_mul(m, f32x4_splat(*a.ads.add(t * a.nb + b))));
            }
        }
        for t in 0..T {
            v128_store(a.out.add(t * a.ld).cast(), f32x4_add(acc[t], accm[t]));
        }
    }
}

/// [`u4_relaxed`] for one token over two consecutive groups ([`PairFn`]): the activation
/// loads serve both groups, and the products are summed in i16 — `i16x8.relaxed_dot`
/// (one `pmaddubsw` on x86) per 16 bytes, widened to i32 once per block — where the i32 dot
/// costs three instructions per 16 bytes. Exact: a pair of products is at most 2·127·15,
/// and a block's eight of them add up to at most 30,480 < 2¹⁵.
///
/// # Safety
/// As [`PairFn`]: `a` points at two whole U4 groups of `nb` blocks, one token and 8 outputs.
#[cfg(any(target_feature = "relaxed-simd", feature = "wasm-relaxed-simd"))]
#[target_feature(enable = "simd128,relaxed-simd")]
unsafe fn u4_relaxed_pair(a: &Tile) {
    unsafe {
        let mask = u8x16_splat(0x0F);
        let (gq, gs) = (a.nb * 64, a.nb * 4);
        let (mut acc0, mut acc1) = (f32x4_splat(0.0), f32x4_splat(0.0));
        let (mut accm0, mut accm1) = (f32x4_splat(0.0), f32x4_splat(0.0));
        for b in 0..a.nb {
            let w0 = a.q.add(b * 64);
            let w1 = w0.add(gq);
            let xp = a.x.add(b * QK);
            let (mut l0, mut h0, mut l1, mut h1) = (
                i16x8_splat(0),
                i16x8_splat(0),
                i16x8_splat(0),
                i16x8_splat(0),
            );
            for j in 0..4 {
                let xl = v128_load32_splat(xp.add(4 * j).cast());
                let xh = v128_load32_splat(xp.add(16 + 4 * j).cast());
                let v0 = v128_load(w0.add(16 * j).cast());
                let v1 = v128_load(w1.add(16 * j).cast());
                l0 = i16x8_add(l0, i16x8_relaxed_dot_i8x16_i7x16(xl, v128_and(v0, mask)));
                h0 = i16x8_add(h0, i16x8_relaxed_dot_i8x16_i7x16(xh, u8x16_shr(v0, 4)));
                l1 = i16x8_add(l1, i16x8_relaxed_dot_i8x16_i7x16(xl, v128_and(v1, mask)));
                h1 = i16x8_add(h1, i16x8_relaxed_dot_i8x16_i7x16(xh, u8x16_shr(v1, 4)));
            }
            let s0 = i32x4_extadd_pairwise_i16x8(i16x8_add(l0, h0));
            let s1 = i32x4_extadd_pairwise_i16x8(i16x8_add(l1, h1));
            let dx = *a.ad.add(b);
            let ds = f32x4_splat(*a.ads.add(b));
            acc0 = scale(acc0, s0, v128_load(a.d.add(b * 4).cast()), dx);
            acc1 = scale(acc1, s1, v128_load(a.d.add(gs + b * 4).cast()), dx);
            accm0 = f32x4_add(accm0, f32x4_mul(v128_load(a.m.add(b * 4).cast()), ds));
            accm1 = f32x4_add(accm1, f32x4_mul(v128_load(a.m.add(gs + b * 4).cast()), ds));
        }
        v128_store(a.out.cast(), f32x4_add(acc0, accm0));
        v128_store(a.out.add(4).cast(), f32x4_add(acc1, accm1));
    }
}

/// [`i8_relaxed`] for one token over two consecutive groups ([`PairFn`]) of a matrix
/// without −128 ([`PackedMat`]'s `i7`): one relaxed dot per 16 bytes instead of two — `|q|`
/// is the 7-bit operand and the activations take `q`'s sign (`x ^ s − s`, `s` = all ones
/// where `q < 0`) — and no offset to take back out. Exact: `|x| ≤ 127` and `|q| ≤ 127`.
/// (A matrix with a −128 keeps the one-group [`i8_relaxed`].)
///
/// # Safety
/// As [`PairFn`]: `a` points at two whole I8 groups of `nb` blocks without a −128, one token
/// and 8 outputs.
#[cfg(any(target_feature = "relaxed-simd", feature = "wasm-relaxed-simd"))]
#[target_feature(enable = "simd128,relaxed-simd")]
unsafe fn i7_relaxed_pair(a: &Tile) {
    unsafe {
        let zero = i8x16_splat(0);
        let (gq, gs) = (a.nb * 128, a.nb * 4);
        let (mut acc0, mut acc1) = (f32x4_splat(0.0), f32x4_splat(0.0));
        for b in 0..a.nb {
            let w0 = a.q.add(b * 128);
            let w1 = w0.add(gq);
            let xp = a.x.add(b * QK);
            let (mut s0, mut t0, mut s1, mut t1) = (
                i32x4_splat(0),
                i32x4_splat(0),
                i32x4_splat(0),
                i32x4_splat(0),
            );
            for j in 0..8 {
                let x = v128_load32_splat(xp.add(4 * j).cast());
                let v0 = v128_load(w0.add(16 * j).cast());
                let v1 = v128_load(w1.add(16 * j).cast());
                let (n0, n1) = (i8x16_lt(v0, zero), i8x16_lt(v1, zero));
                let x0 = i8x16_sub(v128_xor(x, n0), n0);
                let x1 = i8x16_sub(v128_xor(x, n1), n1);
                // Two chains per group (even and odd chunks): half the dependent dots each.
                if j % 2 == 0 {
                    s0 = i32x4_relaxed_dot_i8x16_i7x16_add(x0, i8x16_abs(v0), s0);
                    s1 = i32x4_relaxed_dot_i8x16_i7x16_add(x1, i8x16_abs(v1), s1);
                } else {
                    t0 = i32x4_relaxed_dot_i8x16_i7x16_add(x0, i8x16_abs(v0), t0);
                    t1 = i32x4_relaxed_dot_i8x16_i7x16_add(x1, i8x16_abs(v1), t1);
                }
            }
            let dx = *a.ad.add(b);
            acc0 = scale(
                acc0,
                i32x4_add(s0, t0),
                v128_load(a.d.add(b * 4).cast()),
                dx,
            );
            acc1 = scale(
                acc1,
                i32x4_add(s1, t1),
                v128_load(a.d.add(gs + b * 4).cast()),
                dx,
            );
        }
        v128_store(a.out.cast(), acc0);
        v128_store(a.out.add(4).cast(), acc1);
    }
}

/// # Safety
/// As [`u4_128`], for a signed 8-bit group without minimums ([`Format::I8`]).
#[cfg(any(target_feature = "relaxed-simd", feature = "wasm-relaxed-simd"))]
#[allow(clippy::needless_range_loop)] // t indexes several tile arrays at once
#[target_feature(enable = "simd128,relaxed-simd")]
unsafe fn i8_relaxed<const T: usize>(a: &Tile) {
    unsafe {
        let mask = u8x16_splat(0x0F);
        let flip = u8x16_splat(0x80);
        let k = a.nb * QK;
        let mut acc = [f32x4_splat(0.0); T];
        for b in 0..a.nb {
            let wq = a.q.add(b * 128);
            let mut lo = [i32x4_splat(0); T];
            let mut hi = [i32x4_splat(0); T];
            for j in 0..8 {
                // q + 128 as an unsigned byte, split into two 4-bit operands.
                let v = v128_xor(v128_load(wq.add(16 * j).cast()), flip);
                let l = v128_and(v, mask);
                let h = u8x16_shr(v, 4);
                for t in 0..T {
                    let x = v128_load32_splat(a.x.add(t * k + b * QK + 4 * j).cast());
                    lo[t] = i32x4_relaxed_dot_i8x16_i7x16_add(x, l, lo[t]);
                    hi[t] = i32x4_relaxed_dot_i8x16_i7x16_add(x, h, hi[t]);
                }
            }
            let d = v128_load(a.d.add(b * 4).cast());
            for t in 0..T {
                // Σx·q = 16·Σx·hi + Σx·lo − 128·Σx (integers: |·| < 2²⁰).
                let off = i32x4_splat(128 * *a.isum.add(t * a.nb + b));
                let s = i32x4_sub(i32x4_add(i32x4_shl(hi[t], 4), lo[t]), off);
                acc[t] = scale(acc[t], s, d, *a.ad.add(t * a.nb + b));
            }
        }
        for t in 0..T {
            v128_store(a.out.add(t * a.ld).cast(), acc[t]);
        }
    }
}

/// # Safety
/// As [`u4_128`], for an 8-bit group; `MIN`: the group has minimums; `HALF`: two scales
/// per block (chunks 0–3 and 4–7).
#[allow(clippy::needless_range_loop)] // t indexes several tile arrays at once
#[target_feature(enable = "simd128")]
unsafe fn i8_128<const T: usize, const MIN: bool, const HALF: bool>(a: &Tile) {
    unsafe {
        let spb = if HALF { 2 } else { 1 };
        let k = a.nb * QK;
        let mut acc = [f32x4_splat(0.0); T];
        let mut accm = [f32x4_splat(0.0); T];
        for b in 0..a.nb {
            let wq = a.q.add(b * 128);
            let mut sa = [[i32x4_splat(0); 2]; T];
            let mut sb = [[i32x4_splat(0); 2]; T];
            for j in 0..8 {
                let v = v128_load(wq.add(16 * j).cast());
                let (w01, w23) = (i16x8_extend_low_i8x16(v), i16x8_extend_high_i8x16(v));
                let h = if HALF { j / 4 } else { 0 };
                for t in 0..T {
                    let xp = a.x.add(t * k + b * QK + 4 * j);
                    let x = i16x8_extend_low_i8x16(v128_load32_splat(xp.cast()));
                    sa[t][h] = i32x4_add(sa[t][h], i32x4_dot_i16x8(w01, x));
                    sb[t][h] = i32x4_add(sb[t][h], i32x4_dot_i16x8(w23, x));
                }
            }
            let d0 = v128_load(a.d.add(b * spb * 4).cast());
            for t in 0..T {
                let dx = *a.ad.add(t * a.nb + b);
                acc[t] = scale(acc[t], pairs(sa[t][0], sb[t][0]), d0, dx);
                if HALF {
                    let d1 = v128_load(a.d.add((b * 2 + 1) * 4).cast());
                    acc[t] = scale(acc[t], pairs(sa[t][1], sb[t][1]), d1, dx);
                }
                if MIN {
                    let m = v128_load(a.m.add(b * 4).cast());
                    accm[t] =
                        f32x4_add(accm[t], f32x4_mul(m, f32x4_splat(*a.ads.add(t * a.nb + b))));
                }
            }
        }
        for t in 0..T {
            v128_store(a.out.add(t * a.ld).cast(), f32x4_add(acc[t], accm[t]));
        }
    }
}

/// The two-group decode kernel for this tier and matrix, where there is one.
fn pair_fn(tier: Tier, m: &PackedMat) -> Option<PairFn> {
    match (m.format, tier) {
        #[cfg(any(target_feature = "relaxed-simd", feature = "wasm-relaxed-simd"))]
        (Format::U4, Tier::WasmRelaxed) => Some(u4_relaxed_pair),
        #[cfg(any(target_feature = "relaxed-simd", feature = "wasm-relaxed-simd"))]
        (Format::I8, Tier::WasmRelaxed) if m.i7 => Some(i7_relaxed_pair),
        _ => None,
    }
}

fn tile_fns(tier: Tier, format: Format) -> [TileFn; 4] {
    macro_rules! four {
        ($f:ident) => {
            [$f::<1>, $f::<2>, $f::<3>, $f::<4>]
        };
    }
    match (format, tier) {
        #[cfg(any(target_feature = "relaxed-simd", feature = "wasm-relaxed-simd"))]
        (Format::U4, Tier::WasmRelaxed) => four!(u4_relaxed),
        (Format::U4, _) => four!(u4_128),
        #[cfg(any(target_feature = "relaxed-simd", feature = "wasm-relaxed-simd"))]
        (Format::I8, Tier::WasmRelaxed) => four!(i8_relaxed),
        (Format::I8Min, _) => [
            i8_128::<1, true, false>,
            i8_128::<2, true, false>,
            i8_128::<3, true, false>,
            i8_128::<4, true, false>,
        ],
        (Format::I8Half, _) => [
            i8_128::<1, false, true>,
            i8_128::<2, false, true>,
            i8_128::<3, false, true>,
            i8_128::<4, false, true>,
        ],
        _ => [
            i8_128::<1, false, false>,
            i8_128::<2, false, false>,
            i8_128::<3, false, false>,
            i8_128::<4, false, false>,
        ],
    }
}

/// # Safety
/// As [`super::gemm_shared`] (which checked the output's bounds).
///
/// See [`super::gemm`]: `m.r == 4`, a U4 or I8 matrix (the caller checked bounds).
pub(super) unsafe fn gemm(
    tier: Tier,
    m: &PackedMat,
    acts: &Acts,
    g0: usize,
    g1: usize,
    out: SharedMut,
    ld: usize,
) {
    // SAFETY: the module was built with the tiles' features (it would not validate
    // otherwise); the rest is the caller's contract.
    unsafe {
        gemm_tiles::<4>(
            &TileKernels {
                tiles: tile_fns(tier, m.format),
                pair: pair_fn(tier, m),
            },
            m,
            acts,
            g0,
            g1,
            out,
            ld,
        );
    }
}
