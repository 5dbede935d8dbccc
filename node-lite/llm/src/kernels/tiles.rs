//! The SIMD tile driver shared by the x86 and wasm kernels: a tile is `R` interleaved rows of
//! a packed matrix (one row group) times up to four tokens; the backends supply the tile
//! functions, this module walks the groups and tokens and handles a partial last group.

use super::QK;
use super::packed::{Acts, Format, PackedMat};
use crate::par::SharedMut;

/// Raw pointers of one SIMD tile: a group's blocks (`R` interleaved rows) and up to four
/// tokens' activations. The x86 and wasm tiles read it; [`gemm_tiles`] builds it.
pub(super) struct Tile {
    /// The group's first block of quantized values.
    pub(super) q: *const u8,
    /// The group's first block of row scales (`R` per scale of a block).
    pub(super) d: *const f32,
    /// Row minimums (formats with a minimum only; `R` per block), else null.
    pub(super) m: *const f32,
    /// Blocks per row.
    pub(super) nb: usize,
    /// First token's quantized activations (`k = 32·nb` per token).
    pub(super) x: *const i8,
    /// First token's block scales (`nb` per token).
    pub(super) ad: *const f32,
    /// First token's `d·Σq` per block (`nb` per token).
    pub(super) ads: *const f32,
    /// First token's integer `Σq` per block (`nb` per token).
    #[cfg_attr(
        not(any(target_feature = "relaxed-simd", feature = "wasm-relaxed-simd")),
        allow(dead_code)
    )] // read by the relaxed-SIMD I8 tile only
    pub(super) isum: *const i32,
    /// First token's `R` outputs; tokens `ld` apart.
    pub(super) out: *mut f32,
    pub(super) ld: usize,
}

/// A tile kernel for 1, 2, 3 or 4 tokens (index = tokens − 1).
pub(super) type TileFn = unsafe fn(&Tile);

/// A decode kernel (one token) over **two** consecutive full groups: the [`Tile`] describes
/// the first; the second's blocks, scales and minimums follow the first's (`nb` blocks of
/// `R` rows later) and its `R` outputs follow the first's. Two groups share every
/// activation load and give the CPU two independent accumulator chains.
pub(super) type PairFn = unsafe fn(&Tile);

/// A backend's kernels for one matrix: tiles for 1–4 tokens, and a two-group decode
/// kernel where it has one.
pub(super) struct TileKernels {
    pub(super) tiles: [TileFn; 4],
    pub(super) pair: Option<PairFn>,
}

/// Groups `g0..g1` of `m` (row groups of `R`) times every token of `acts`, four tokens per
/// tile (one token: two full groups per call where `k.pair` is given); a partial last group
/// goes through a spill buffer, then only its live rows are written.
///
/// # Safety
/// As [`super::gemm_shared`] (which checked the output's bounds), and `k`'s kernels must be
/// safe to call on this CPU (their target features present) for `m`.
pub(super) unsafe fn gemm_tiles<const R: usize>(
    k: &TileKernels,
    m: &PackedMat,
    acts: &Acts,
    g0: usize,
    g1: usize,
    out: SharedMut,
    ld: usize,
) {
    assert!(m.r == R && !matches!(m.format, Format::Raw(_)));
    let nb = m.cols / QK;
    let bpb = m.block_bytes();
    let spb = m.format.scales();
    assert!(m.q.len() >= m.groups() * nb * bpb && m.d.len() >= m.groups() * nb * spb * R);
    assert!(!m.format.has_min() || m.m.len() >= m.groups() * nb * R);
    assert!(acts.q.len() >= acts.n * m.cols && acts.d.len() >= acts.n * nb);
    assert!(acts.ds.len() >= acts.n * nb && acts.isum.len() >= acts.n * nb);
    let mut spill = [[0f32; R]; 4];
    let tile = |g: usize, t0: usize, out: *mut f32, ld: usize| {
        // SAFETY (pointer offsets): group g's blocks and tokens t0.. are inside the buffers
        // whose lengths are asserted above (g < m.groups(), t0 < acts.n).
        unsafe {
            Tile {
                q: m.q.as_ptr().add(g * nb * bpb),
                d: m.d.as_ptr().add(g * nb * spb * R),
                m: if m.format.has_min() {
                    m.m.as_ptr().add(g * nb * R)
                } else {
                    core::ptr::null()
                },
                nb,
                x: acts.q.as_ptr().add(t0 * m.cols),
                ad: acts.d.as_ptr().add(t0 * nb),
                ads: acts.ds.as_ptr().add(t0 * nb),
                isum: acts.isum.as_ptr().add(t0 * nb),
                out,
                ld,
            }
        }
    };
    let mut g = g0;
    if let (Some(pair), 1) = (k.pair, acts.n) {
        // Two full groups per call while both are whole; the rest below.
        while g + 1 < g1 && (g + 2) * R <= m.rows {
            // Bounds checked by `at`: rows of groups g and g+1 (the caller's contract).
            let t = tile(g, 0, out.at(g * R, 2 * R), 0);
            // SAFETY: the caller vouches for `pair` on this CPU; both groups' blocks are
            // inside `m` (g + 1 < g1 ≤ groups) and the 2R outputs were bounds-checked.
            unsafe { pair(&t) };
            g += 2;
        }
    }
    for g in g..g1 {
        let live = R.min(m.rows - g * R);
        let mut t0 = 0;
        while t0 < acts.n {
            let tn = 4.min(acts.n - t0);
            let (dst, dld) = if live == R {
                // Bounds checked by `at`; rows of group g (the caller's contract).
                (out.at(t0 * ld + g * R, (tn - 1) * ld + R), ld)
            } else {
                (spill.as_mut_ptr().cast::<f32>(), R)
            };
            let tile = tile(g, t0, dst, dld);
            // SAFETY: the caller vouches for `fns` on this CPU; every pointer covers what the
            // tile reads and writes (above).
            unsafe { k.tiles[tn - 1](&tile) };
            if live < R {
                for (t, row) in spill.iter().enumerate().take(tn) {
                    // SAFETY: rows of group g (the caller's contract); bounds checked.
                    unsafe { out.write_slice((t0 + t) * ld + g * R, &row[..live]) };
                }
            }
            t0 += tn;
        }
    }
}
