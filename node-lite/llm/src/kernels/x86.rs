//! x86-64 kernels over packed groups of 8 rows (one `__m256i` lane per row), picked at run
//! time: AVX-512 VNNI (256-bit `vpdpbusd`), AVX-VNNI (its VEX form), or AVX2.
//!
//! A tile is 8 rows × `T` tokens (`T` = 1..=4). Per block of 32 weights and token:
//! - **U4**: 4 loads of 32 bytes give, after a mask and a shift, 8 registers of 8 rows × 4
//!   nibbles; each meets a 4-byte broadcast of the token's activations. VNNI: 8 `vpdpbusd`.
//!   AVX2: 8 `vpmaddubsw` summed in i16 (each ≤ 2·15·127, eight of them < 2¹⁵), then one
//!   `vpmaddwd` by ones.
//! - **I8** (Q8_0, Q5_0; with minimums: Q5_1; with a scale per 16: Q6_K): 8 loads of 32
//!   bytes; `|w|` × the activations given `w`'s sign (`vpsignb`) = `w·x` with the unsigned
//!   operand `vpdpbusd`/`vpmaddubsw` want; VNNI: 8 `vpdpbusd`; AVX2: `vpmaddubsw` + `vpmaddwd`
//!   per load (pairs reach 2·128·127: no i16 sums). Q6_K's two halves keep two accumulators.
//!
//! Then per block: i32 → f32, × (row scales · token scale), + row minimums · (token scale ·
//! Σq), in two independent FMA chains.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::packed::{Acts, Format, PackedMat};
use super::tiles::{Tile, TileFn, TileKernels, gemm_tiles};
use super::{Q8Ref, QK, Tier};
use crate::par::SharedMut;
use crate::quant::GgmlType;

fn detect() -> Option<Tier> {
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
        return None;
    }
    if std::env::var_os("SHOAL_LLM_KERNEL").is_some_and(|v| v == "avx2") {
        return Some(Tier::Avx2);
    }
    if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
        return Some(Tier::Avx512Vnni);
    }
    if is_x86_feature_detected!("avxvnni") {
        return Some(Tier::AvxVnni);
    }
    Some(Tier::Avx2)
}

/// The best x86 tier (AVX2 + FMA at least), detected once. `SHOAL_LLM_KERNEL=avx2` caps it
/// at AVX2 (for comparisons).
pub(super) fn tier() -> Option<Tier> {
    static T: OnceLock<Option<Tier>> = OnceLock::new();
    *T.get_or_init(detect)
}

/// Every x86 tier this CPU runs.
pub(super) fn tiers() -> Vec<Tier> {
    let mut v = Vec::new();
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
            v.push(Tier::Avx512Vnni);
        }
        if is_x86_feature_detected!("avxvnni") {
            v.push(Tier::AvxVnni);
        }
        v.push(Tier::Avx2);
    }
    v
}

macro_rules! u4_tile {
    ($name:ident, $feat:literal, $dp:ident) => {
        /// # Safety
        /// The CPU has the features; `a` points at `nb` whole blocks of one group (values,
        /// scales, minimums), `T` tokens of activations and `T` outputs of 8.
        #[target_feature(enable = $feat)]
        unsafe fn $name<const T: usize>(a: &Tile) {
            unsafe {
                let mask = _mm256_set1_epi8(0x0F);
                let mut acc = [_mm256_setzero_ps(); T];
                let mut accm = [_mm256_setzero_ps(); T];
                let k = a.nb * QK;
                for b in 0..a.nb {
                    let wq = a.q.add(b * 128);
                    let mut s = [_mm256_setzero_si256(); T];
                    $dp!(T, s, wq, mask, a.x, k, b);
                    let d = _mm256_loadu_ps(a.d.add(b * 8));
                    let m = _mm256_loadu_ps(a.m.add(b * 8));
                    for t in 0..T {
                        let dx = _mm256_set1_ps(*a.ad.add(t * a.nb + b));
                        let ds = _mm256_set1_ps(*a.ads.add(t * a.nb + b));
                        acc[t] =
                            _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t]), _mm256_mul_ps(d, dx), acc[t]);
                        accm[t] = _mm256_fmadd_ps(m, ds, accm[t]);
                    }
                }
                for t in 0..T {
                    _mm256_storeu_ps(a.out.add(t * a.ld), _mm256_add_ps(acc[t], accm[t]));
                }
            }
        }
    };
}

/// 4-byte broadcast of activations `x[t·k + 32b + off ..]`.
macro_rules! bcast {
    ($x:expr, $k:expr, $t:expr, $b:expr, $off:expr) => {
        _mm256_set1_epi32(
            $x.add($t * $k + $b * QK + $off)
                .cast::<i32>()
                .read_unaligned(),
        )
    };
}

macro_rules! u4_dp_vnni512 {
    ($T:ident, $s:ident, $wq:ident, $mask:ident, $x:expr, $k:ident, $b:ident) => {
        for j in 0..4 {
            let v = _mm256_loadu_si256($wq.add(32 * j).cast());
            let lo = _mm256_and_si256(v, $mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), $mask);
            for t in 0..$T {
                $s[t] = _mm256_dpbusd_epi32($s[t], lo, bcast!($x, $k, t, $b, 4 * j));
                $s[t] = _mm256_dpbusd_epi32($s[t], hi, bcast!($x, $k, t, $b, 16 + 4 * j));
            }
        }
    };
}

macro_rules! u4_dp_avxvnni {
    ($T:ident, $s:ident, $wq:ident, $mask:ident, $x:expr, $k:ident, $b:ident) => {
        for j in 0..4 {
            let v = _mm256_loadu_si256($wq.add(32 * j).cast());
            let lo = _mm256_and_si256(v, $mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), $mask);
            for t in 0..$T {
                $s[t] = _mm256_dpbusd_avx_epi32($s[t], lo, bcast!($x, $k, t, $b, 4 * j));
                $s[t] = _mm256_dpbusd_avx_epi32($s[t], hi, bcast!($x, $k, t, $b, 16 + 4 * j));
            }
        }
    };
}

macro_rules! u4_dp_avx2 {
    ($T:ident, $s:ident, $wq:ident, $mask:ident, $x:expr, $k:ident, $b:ident) => {
        let mut s16 = [_mm256_setzero_si256(); $T];
        for j in 0..4 {
            let v = _mm256_loadu_si256($wq.add(32 * j).cast());
            let lo = _mm256_and_si256(v, $mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), $mask);
            for t in 0..$T {
                let p = _mm256_add_epi16(
                    _mm256_maddubs_epi16(lo, bcast!($x, $k, t, $b, 4 * j)),
                    _mm256_maddubs_epi16(hi, bcast!($x, $k, t, $b, 16 + 4 * j)),
                );
                s16[t] = _mm256_add_epi16(s16[t], p);
            }
        }
        for t in 0..$T {
            $s[t] = _mm256_madd_epi16(s16[t], _mm256_set1_epi16(1));
        }
    };
}

u4_tile!(u4_vnni512, "avx2,fma,avx512vnni,avx512vl", u4_dp_vnni512);
u4_tile!(u4_avxvnni, "avx2,fma,avxvnni", u4_dp_avxvnni);
u4_tile!(u4_avx2, "avx2,fma", u4_dp_avx2);

macro_rules! i8_tile {
    ($name:ident, $feat:literal, $dp:ident) => {
        /// # Safety
        /// As for the U4 tiles; `MIN`: the group has minimums; `HALF`: two scales per block
        /// (chunks 0–3 and 4–7).
        #[target_feature(enable = $feat)]
        unsafe fn $name<const T: usize, const MIN: bool, const HALF: bool>(a: &Tile) {
            unsafe {
                let spb = if HALF { 2 } else { 1 };
                let mut acc = [_mm256_setzero_ps(); T];
                let mut accm = [_mm256_setzero_ps(); T];
                let k = a.nb * QK;
                for b in 0..a.nb {
                    let wq = a.q.add(b * 256);
                    let mut s = [[_mm256_setzero_si256(); 2]; T];
                    for j in 0..8 {
                        let w = _mm256_loadu_si256(wq.add(32 * j).cast());
                        // |w| × (x with w's sign) = w·x, with an unsigned first operand.
                        let aw = _mm256_sign_epi8(w, w);
                        let h = if HALF { j / 4 } else { 0 };
                        for t in 0..T {
                            let sx = _mm256_sign_epi8(bcast!(a.x, k, t, b, 4 * j), w);
                            s[t][h] = $dp!(s[t][h], aw, sx);
                        }
                    }
                    let d0 = _mm256_loadu_ps(a.d.add(b * spb * 8));
                    let d1 = if HALF {
                        _mm256_loadu_ps(a.d.add((b * 2 + 1) * 8))
                    } else {
                        d0
                    };
                    for t in 0..T {
                        let dx = _mm256_set1_ps(*a.ad.add(t * a.nb + b));
                        acc[t] = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(s[t][0]),
                            _mm256_mul_ps(d0, dx),
                            acc[t],
                        );
                        if HALF {
                            acc[t] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(s[t][1]),
                                _mm256_mul_ps(d1, dx),
                                acc[t],
                            );
                        }
                        if MIN {
                            let m = _mm256_loadu_ps(a.m.add(b * 8));
                            let ds = _mm256_set1_ps(*a.ads.add(t * a.nb + b));
                            accm[t] = _mm256_fmadd_ps(m, ds, accm[t]);
                        }
                    }
                }
                for t in 0..T {
                    _mm256_storeu_ps(a.out.add(t * a.ld), _mm256_add_ps(acc[t], accm[t]));
                }
            }
        }
    };
}

macro_rules! dp_vnni512 {
    ($acc:expr, $u:expr, $s:expr) => {
        _mm256_dpbusd_epi32($acc, $u, $s)
    };
}

macro_rules! dp_avxvnni {
    ($acc:expr, $u:expr, $s:expr) => {
        _mm256_dpbusd_avx_epi32($acc, $u, $s)
    };
}

macro_rules! dp_avx2 {
    ($acc:expr, $u:expr, $s:expr) => {
        _mm256_add_epi32(
            $acc,
            _mm256_madd_epi16(_mm256_maddubs_epi16($u, $s), _mm256_set1_epi16(1)),
        )
    };
}

i8_tile!(i8_vnni512, "avx2,fma,avx512vnni,avx512vl", dp_vnni512);
i8_tile!(i8_avxvnni, "avx2,fma,avxvnni", dp_avxvnni);
i8_tile!(i8_avx2, "avx2,fma", dp_avx2);

fn tile_fns(tier: Tier, format: Format) -> [TileFn; 4] {
    macro_rules! four {
        ($f:ident) => {
            [$f::<1>, $f::<2>, $f::<3>, $f::<4>]
        };
        ($f:ident, $min:literal, $half:literal) => {
            [
                $f::<1, $min, $half>,
                $f::<2, $min, $half>,
                $f::<3, $min, $half>,
                $f::<4, $min, $half>,
            ]
        };
    }
    macro_rules! i8_variants {
        ($f:ident) => {
            match format {
                Format::I8Min => four!($f, true, false),
                Format::I8Half => four!($f, false, true),
                _ => four!($f, false, false),
            }
        };
    }
    match (format, tier) {
        (Format::U4, Tier::Avx512Vnni) => four!(u4_vnni512),
        (Format::U4, Tier::AvxVnni) => four!(u4_avxvnni),
        (Format::U4, _) => four!(u4_avx2),
        (_, Tier::Avx512Vnni) => i8_variants!(i8_vnni512),
        (_, Tier::AvxVnni) => i8_variants!(i8_avxvnni),
        _ => i8_variants!(i8_avx2),
    }
}

/// # Safety
/// As [`super::gemm_shared`] (which checked the output's bounds).
///
/// See [`super::gemm`]: `m.r == 8`, a U4 or I8 matrix, `tier` an x86 tier this CPU has
/// (the caller checked bounds; `tier` comes from [`tiers`]).
pub(super) unsafe fn gemm(
    tier: Tier,
    m: &PackedMat,
    acts: &Acts,
    g0: usize,
    g1: usize,
    out: SharedMut,
    ld: usize,
) {
    assert!(tiers().contains(&tier));
    let k = TileKernels {
        tiles: tile_fns(tier, m.format),
        pair: None,
    };
    // SAFETY: the tier's features are present (asserted); the rest is the caller's contract.
    unsafe { gemm_tiles::<8>(&k, m, acts, g0, g1, out, ld) }
}

/// A per-row kernel for the types that are not repacked, or `None` where the scalar one is
/// used.
///
/// # Safety
/// AVX2 and FMA must be available ([`tier`] is `Some`).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot(ty: GgmlType, row: &[u8], x: &[f32], _xq: &Q8Ref<'_>) -> Option<f32> {
    match ty {
        GgmlType::F32 if row.len() == 4 * x.len() => {
            let mut acc = [_mm256_setzero_ps(); 2];
            let n = x.len() / 16 * 16;
            // SAFETY: i + 16 ≤ n ≤ x.len(), and row holds 4·x.len() bytes.
            unsafe {
                for i in (0..n).step_by(16) {
                    for (h, a) in acc.iter_mut().enumerate() {
                        let w = _mm256_loadu_ps(row.as_ptr().add(4 * (i + 8 * h)).cast());
                        let v = _mm256_loadu_ps(x.as_ptr().add(i + 8 * h));
                        *a = _mm256_fmadd_ps(w, v, *a);
                    }
                }
            }
            let mut s = hsum(_mm256_add_ps(acc[0], acc[1]));
            for i in n..x.len() {
                let b = &row[4 * i..4 * i + 4];
                s += f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * x[i];
            }
            Some(s)
        }
        _ => None,
    }
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
