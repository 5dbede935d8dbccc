//! Packed, register-tiled f32 matrix multiply: `C = A·B (+ bias)`.
//!
//! - `B` (a weight, or attention's `Kᵀ`/`V`) is packed once into column panels of `NR`
//!   columns: panel `j` holds `k` rows of `NR` contiguous floats (zero-padded past `n`).
//! - `A` is read in place (row-major, any row stride), `C` written in place (any row stride).
//! - Loops: `KC`-deep slices of `k` (the panel slice stays in L1), `MC`-row blocks of `A`
//!   (stay in L2), then one `MR × NR` register tile per step.
//! - Microkernels (chosen by [`Isa`]): AVX-512 12×32 and AVX2+FMA 6×16 on x86-64 (runtime
//!   detection), wasm `simd128` 6×8 (compile time: cargo feature `wasm-simd`, which compiles
//!   the kernel and the element-wise ops with `#[target_feature(enable = "simd128")]`, or a
//!   whole-crate `-C target-feature=+simd128`), and a portable scalar 4×8 everywhere. A wasm
//!   module with SIMD instructions does not validate in a browser without SIMD, so the app
//!   ships a SIMD and a scalar worker build and picks one in JS.
//!
//! Edge tiles (fewer than `MR` rows or `NR` columns) go through a zero-padded copy of the
//! `A` strip and a temporary `C` tile, so the microkernels only ever see full tiles.

// SIMD intrinsics and raw tile pointers; every unsafe block states its bounds argument.
#![allow(unsafe_code)]

/// Depth of one `k` slice.
const KC: usize = 256;
/// Rows of `A` per block.
const MC: usize = 96;

/// Which microkernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust, 4×8.
    Scalar,
    /// x86-64 AVX2 + FMA, 6×16.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// x86-64 AVX-512F, 12×32.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// wasm32 `simd128`, 6×8.
    #[cfg(all(
        target_arch = "wasm32",
        any(target_feature = "simd128", feature = "wasm-simd")
    ))]
    Simd128,
    /// wasm32 relaxed SIMD (`f32x4.relaxed_madd`: one fused multiply-add where the CPU has
    /// FMA), 6×8.
    #[cfg(all(target_arch = "wasm32", feature = "wasm-relaxed-simd"))]
    Relaxed,
}

impl Isa {
    /// The fastest kernel this machine runs; natively `SHOAL_FAST_KERNEL` (a [`name`](Self::name))
    /// picks another available one (benchmarks).
    pub fn best() -> Isa {
        let available = Self::available();
        #[cfg(not(target_family = "wasm"))]
        if let Ok(want) = std::env::var("SHOAL_FAST_KERNEL")
            && let Some(isa) = available.iter().find(|i| i.name() == want)
        {
            return *isa;
        }
        available.last().copied().unwrap_or(Isa::Scalar)
    }

    /// Every kernel this machine runs, slowest first.
    pub fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut v = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                v.push(Isa::Avx2);
            }
            if is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
        }
        #[cfg(all(
            target_arch = "wasm32",
            any(target_feature = "simd128", feature = "wasm-simd")
        ))]
        v.push(Isa::Simd128);
        #[cfg(all(target_arch = "wasm32", feature = "wasm-relaxed-simd"))]
        v.push(Isa::Relaxed);
        v
    }

    /// Rows per register tile.
    pub fn mr(self) -> usize {
        match self {
            Isa::Scalar => 4,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => 6,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => 12,
            #[cfg(all(
                target_arch = "wasm32",
                any(target_feature = "simd128", feature = "wasm-simd")
            ))]
            Isa::Simd128 => 6,
            #[cfg(all(target_arch = "wasm32", feature = "wasm-relaxed-simd"))]
            Isa::Relaxed => simd128::relaxed::MR,
        }
    }

    /// Columns per register tile (= panel width of a [`PackedB`]).
    pub fn nr(self) -> usize {
        match self {
            Isa::Scalar => 8,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => 16,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => 32,
            #[cfg(all(
                target_arch = "wasm32",
                any(target_feature = "simd128", feature = "wasm-simd")
            ))]
            Isa::Simd128 => 8,
            #[cfg(all(target_arch = "wasm32", feature = "wasm-relaxed-simd"))]
            Isa::Relaxed => 8,
        }
    }

    /// Short label for logs, benchmarks and `SHOAL_FAST_KERNEL`: `scalar`, `avx2+fma`, ….
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "avx2+fma",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "avx512",
            #[cfg(all(
                target_arch = "wasm32",
                any(target_feature = "simd128", feature = "wasm-simd")
            ))]
            Isa::Simd128 => "simd128",
            #[cfg(all(target_arch = "wasm32", feature = "wasm-relaxed-simd"))]
            Isa::Relaxed => "relaxed-simd",
        }
    }
}

/// `B` (`k × n`) packed into `NR`-column panels for one [`Isa`].
#[derive(Debug, Clone)]
pub struct PackedB {
    isa: Isa,
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl PackedB {
    /// An empty packing for `isa`, to be filled with [`pack`](Self::pack) (reuses its buffer).
    pub fn new(isa: Isa) -> Self {
        Self {
            isa,
            k: 0,
            n: 0,
            data: Vec::new(),
        }
    }

    /// Pack the `k × n` matrix whose element `(p, j)` is `src[p * rs + j * cs]`.
    pub fn from_strided(isa: Isa, src: &[f32], k: usize, n: usize, rs: usize, cs: usize) -> Self {
        let mut b = Self::new(isa);
        b.pack(src, k, n, rs, cs);
        b
    }

    /// Row-major `k × n`.
    pub fn from_row_major(isa: Isa, src: &[f32], k: usize, n: usize) -> Self {
        Self::from_strided(isa, src, k, n, n, 1)
    }

    /// Repack from `src` (see [`from_strided`](Self::from_strided)).
    pub fn pack(&mut self, src: &[f32], k: usize, n: usize, rs: usize, cs: usize) {
        let nr = self.isa.nr();
        let panels = n.div_ceil(nr);
        self.k = k;
        self.n = n;
        self.data.clear();
        self.data.resize(panels * k * nr, 0.0);
        if k == 0 || n == 0 {
            return;
        }
        assert!(
            src.len() > (k - 1) * rs + (n - 1) * cs,
            "pack: source too short"
        );
        for (panel, out) in self.data.chunks_exact_mut(k * nr).enumerate() {
            let j0 = panel * nr;
            let cols = nr.min(n - j0);
            for (p, row) in out.chunks_exact_mut(nr).enumerate() {
                let base = p * rs + j0 * cs;
                if cs == 1 {
                    row[..cols].copy_from_slice(&src[base..base + cols]);
                } else {
                    for (jj, v) in row[..cols].iter_mut().enumerate() {
                        *v = src[base + jj * cs];
                    }
                }
            }
        }
    }

    /// Rows of the packed `B` (the GEMM's inner dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of the packed `B` (the output width, before panel padding).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The ISA this packing's panel width was chosen for; tiles must run on the same one.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Number of `NR`-column panels.
    pub fn panels(&self) -> usize {
        self.n.div_ceil(self.isa.nr())
    }
}

/// `c[i*ldc + j] = bias[j] + Σ_p a[i*lda + p] · B[p, j]` for `i < m`, `j < b.n()`.
pub fn gemm(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    c: &mut [f32],
    ldc: usize,
) {
    let n = b.n;
    if m == 0 || n == 0 {
        return;
    }
    check(m, a, lda, b, bias, c.len(), ldc);
    // SAFETY: `check` proved every index the block touches is in bounds; one caller, one block.
    unsafe { gemm_block(0..m, 0..b.panels(), a, lda, b, bias, c.as_mut_ptr(), ldc) }
}

/// Panics unless the operands cover `m × b.n()` with these strides.
pub fn check(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    c_len: usize,
    ldc: usize,
) {
    let (k, n) = (b.k, b.n);
    assert!(lda >= k && ldc >= n, "gemm: stride shorter than a row");
    assert!(k == 0 || a.len() >= (m - 1) * lda + k, "gemm: A too short");
    assert!(c_len >= (m - 1) * ldc + n, "gemm: C too short");
    assert!(bias.is_none_or(|v| v.len() >= n), "gemm: bias too short");
}

/// Rows `rows` × panels `panels` of `C`.
///
/// # Safety
/// `check(m, a, lda, b, bias, len(c), ldc)` must hold with `rows.end <= m`, `panels.end <=
/// b.panels()`, and no one else may access this block of `C` meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_block(
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    c: *mut f32,
    ldc: usize,
) {
    let (isa, k, n) = (b.isa, b.k, b.n);
    let (mr, nr) = (isa.mr(), isa.nr());
    let bias = bias.map(|v| v.as_ptr());
    let mut strip = [0f32; 12 * KC]; // a zero-padded A strip for edge rows (MR ≤ 12)
    let mut tile = [0f32; 12 * 32]; // a C tile for edge tiles (MR·NR ≤ 384)
    if k == 0 {
        // C = bias (or 0).
        for i in rows {
            for j in panels.start * nr..(panels.end * nr).min(n) {
                // SAFETY: in bounds per the contract.
                unsafe { *c.add(i * ldc + j) = bias.map_or(0.0, |p| *p.add(j)) };
            }
        }
        return;
    }
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let first = k0 == 0;
        for i0 in (rows.start..rows.end).step_by(MC) {
            let i1 = (i0 + MC).min(rows.end);
            for panel in panels.clone() {
                let j0 = panel * nr;
                let cols = nr.min(n - j0);
                // SAFETY: panel < panels(), k0 + kc <= k.
                let bp = unsafe { b.data.as_ptr().add(panel * k * nr + k0 * nr) };
                let bias_p = bias.map(|p| unsafe { p.add(j0) });
                let mut i = i0;
                while i < i1 {
                    let r = mr.min(i1 - i);
                    // SAFETY: rows i..i+r and columns k0..k0+kc of A are in bounds.
                    let mut ap = unsafe { a.as_ptr().add(i * lda + k0) };
                    let mut ald = lda;
                    if r < mr {
                        for rr in 0..mr {
                            let dst = &mut strip[rr * kc..(rr + 1) * kc];
                            if rr < r {
                                let s = (i + rr) * lda + k0;
                                dst.copy_from_slice(&a[s..s + kc]);
                            } else {
                                dst.fill(0.0);
                            }
                        }
                        ap = strip.as_ptr();
                        ald = kc;
                    }
                    // SAFETY: rows i..i+r, columns j0..j0+cols of C are ours.
                    let cp = unsafe { c.add(i * ldc + j0) };
                    if r == mr && cols == nr {
                        unsafe { micro(isa, kc, ap, ald, bp, cp, ldc, bias_p, first) };
                    } else {
                        let t = tile.as_mut_ptr();
                        if !first {
                            for rr in 0..r {
                                for jj in 0..cols {
                                    unsafe { *t.add(rr * nr + jj) = *cp.add(rr * ldc + jj) };
                                }
                            }
                        }
                        // The bias is read for all NR columns: pad it.
                        let mut bias_pad = [0f32; 32];
                        let bias_t = bias_p.map(|p| {
                            for (jj, v) in bias_pad[..cols].iter_mut().enumerate() {
                                *v = unsafe { *p.add(jj) };
                            }
                            bias_pad.as_ptr()
                        });
                        unsafe { micro(isa, kc, ap, ald, bp, t, nr, bias_t, first) };
                        for rr in 0..r {
                            for jj in 0..cols {
                                unsafe { *cp.add(rr * ldc + jj) = *t.add(rr * nr + jj) };
                            }
                        }
                    }
                    i += r;
                }
            }
        }
    }
}

/// One full `MR × NR` tile: `C = init + A·B` where `init` is `bias` (or 0) when `first`,
/// else `C` itself.
///
/// # Safety
/// `a` readable for `MR` rows (stride `lda`) × `kc`; `b` for `kc × NR`; `c` writable for `MR`
/// rows (stride `ldc`) × `NR`; `bias` (if any) readable for `NR`. The ISA must be available.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn micro(
    isa: Isa,
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    bias: Option<*const f32>,
    first: bool,
) {
    unsafe {
        match isa {
            Isa::Scalar => scalar::tile(kc, a, lda, b, c, ldc, bias, first),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::tile(kc, a, lda, b, c, ldc, bias, first),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::tile(kc, a, lda, b, c, ldc, bias, first),
            #[cfg(all(
                target_arch = "wasm32",
                any(target_feature = "simd128", feature = "wasm-simd")
            ))]
            Isa::Simd128 => simd128::plain::tile(kc, a, lda, b, c, ldc, bias, first),
            #[cfg(all(target_arch = "wasm32", feature = "wasm-relaxed-simd"))]
            Isa::Relaxed => simd128::relaxed::tile(kc, a, lda, b, c, ldc, bias, first),
        }
    }
}

mod scalar {
    const MR: usize = 4;
    const NR: usize = 8;

    /// # Safety
    /// See `micro`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn tile(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        bias: Option<*const f32>,
        first: bool,
    ) {
        unsafe {
            let mut acc = [[0f32; NR]; MR];
            for (r, row) in acc.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = if !first {
                        *c.add(r * ldc + j)
                    } else {
                        bias.map_or(0.0, |p| *p.add(j))
                    };
                }
            }
            for p in 0..kc {
                let bv = std::slice::from_raw_parts(b.add(p * NR), NR);
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = *a.add(r * lda + p);
                    for (v, &bj) in row.iter_mut().zip(bv) {
                        *v += av * bj;
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (j, v) in row.iter().enumerate() {
                    *c.add(r * ldc + j) = *v;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::*;
    const MR: usize = 6;

    /// # Safety
    /// See `micro`; the CPU must have AVX2 and FMA.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn tile(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        bias: Option<*const f32>,
        first: bool,
    ) {
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; MR];
            if !first {
                for (r, row) in acc.iter_mut().enumerate() {
                    row[0] = _mm256_loadu_ps(c.add(r * ldc));
                    row[1] = _mm256_loadu_ps(c.add(r * ldc + 8));
                }
            } else if let Some(p) = bias {
                let (b0, b1) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
                acc.fill([b0, b1]);
            }
            for p in 0..kc {
                let b0 = _mm256_loadu_ps(b.add(p * 16));
                let b1 = _mm256_loadu_ps(b.add(p * 16 + 8));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*a.add(r * lda + p));
                    row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(av, b1, row[1]);
                }
            }
            for (r, row) in acc.iter().enumerate() {
                _mm256_storeu_ps(c.add(r * ldc), row[0]);
                _mm256_storeu_ps(c.add(r * ldc + 8), row[1]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::*;
    const MR: usize = 12;

    /// # Safety
    /// See `micro`; the CPU must have AVX-512F.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn tile(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        bias: Option<*const f32>,
        first: bool,
    ) {
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; MR];
            if !first {
                for (r, row) in acc.iter_mut().enumerate() {
                    row[0] = _mm512_loadu_ps(c.add(r * ldc));
                    row[1] = _mm512_loadu_ps(c.add(r * ldc + 16));
                }
            } else if let Some(p) = bias {
                let (b0, b1) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
                acc.fill([b0, b1]);
            }
            for p in 0..kc {
                let b0 = _mm512_loadu_ps(b.add(p * 32));
                let b1 = _mm512_loadu_ps(b.add(p * 32 + 16));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(r * lda + p));
                    row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(av, b1, row[1]);
                }
            }
            for (r, row) in acc.iter().enumerate() {
                _mm512_storeu_ps(c.add(r * ldc), row[0]);
                _mm512_storeu_ps(c.add(r * ldc + 16), row[1]);
            }
        }
    }
}

#[cfg(all(
    target_arch = "wasm32",
    any(target_feature = "simd128", feature = "wasm-simd")
))]
mod simd128 {
    /// The 6×8 `simd128` tile; `$madd(a, b, acc)` is `acc + a·b` (two instructions, or one
    /// relaxed fused multiply-add).
    macro_rules! tile {
        ($features:literal, $mr:literal, |$x:ident, $y:ident, $z:ident| $madd:expr) => {
            use core::arch::wasm32::*;
            pub(crate) const MR: usize = $mr;

            /// # Safety
            /// See `micro`.
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn tile(
                kc: usize,
                a: *const f32,
                lda: usize,
                b: *const f32,
                c: *mut f32,
                ldc: usize,
                bias: Option<*const f32>,
                first: bool,
            ) {
                unsafe {
                    let mut acc = [[f32x4_splat(0.0); 2]; MR];
                    if !first {
                        for (r, row) in acc.iter_mut().enumerate() {
                            row[0] = v128_load(c.add(r * ldc) as *const v128);
                            row[1] = v128_load(c.add(r * ldc + 4) as *const v128);
                        }
                    } else if let Some(p) = bias {
                        let (b0, b1) = (
                            v128_load(p as *const v128),
                            v128_load(p.add(4) as *const v128),
                        );
                        for row in acc.iter_mut() {
                            *row = [b0, b1];
                        }
                    }
                    for p in 0..kc {
                        let b0 = v128_load(b.add(p * 8) as *const v128);
                        let b1 = v128_load(b.add(p * 8 + 4) as *const v128);
                        for (r, row) in acc.iter_mut().enumerate() {
                            let av = v128_load32_splat(a.add(r * lda + p) as *const u32);
                            row[0] = {
                                let ($x, $y, $z) = (av, b0, row[0]);
                                $madd
                            };
                            row[1] = {
                                let ($x, $y, $z) = (av, b1, row[1]);
                                $madd
                            };
                        }
                    }
                    for (r, row) in acc.iter().enumerate() {
                        v128_store(c.add(r * ldc) as *mut v128, row[0]);
                        v128_store(c.add(r * ldc + 4) as *mut v128, row[1]);
                    }
                }
            }
        };
    }

    pub(crate) mod plain {
        tile!("simd128", 6, |a, b, c| f32x4_add(c, f32x4_mul(a, b)));
    }

    #[cfg(feature = "wasm-relaxed-simd")]
    pub(crate) mod relaxed {
        tile!("simd128,relaxed-simd", 6, |a, b, c| f32x4_relaxed_madd(
            a, b, c
        ));
    }
}

/// Check `isa`'s GEMM against an f64 reference on odd shapes (every m, n in 1..=33 with k in
/// a spread over 1..=33, then larger shapes, strides, transposed B, k = 0), with and without
/// bias, and that nothing outside `C`'s `m × n` is written. Returns the number of cases.
/// Native tests call it for every compiled kernel; the browser worker exports it so the e2e
/// suite runs it on the wasm SIMD and scalar builds.
pub fn self_test(isa: Isa) -> Result<usize, String> {
    let mut cases = 0;
    for m in 1..=33 {
        for k in (1..=33).filter(|k| k % 3 == 1 || *k >= 32) {
            for n in 1..=33 {
                check_case(isa, m, k, n, k, n, false)?;
                cases += 1;
            }
        }
    }
    let shapes = [
        (1, 384, 384),
        (12, 384, 1152),
        (37, 1536, 384),
        (100, 384, 1536),
        (131, 300, 70),
        (97, 32, 97),
        (97, 97, 32),
        (200, 257, 33),
        (5, 513, 45),
    ];
    for &(m, k, n) in &shapes {
        check_case(isa, m, k, n, k, n, false)?;
        check_case(isa, m, k, n, k + 7, n + 3, false)?;
        check_case(isa, m, k, n, k + 1, n, true)?;
        cases += 3;
    }
    check_case(isa, 3, 0, 5, 1, 5, false)?; // k = 0: C = bias
    Ok(cases + 1)
}

/// Deterministic values in [-1, 1).
pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// One shape: `lda`/`ldc` strides, `trans`: B given as the transpose of a row-major matrix.
fn check_case(
    isa: Isa,
    m: usize,
    k: usize,
    n: usize,
    lda: usize,
    ldc: usize,
    trans: bool,
) -> Result<(), String> {
    let a = values(m * lda + 3, (m * 131 + k * 7 + n) as u64);
    let (braw, rs, cs) = if trans {
        (values(n * k + 1, (n * 17 + k) as u64), 1, k) // B = Xᵀ with X n×k row-major
    } else {
        (values(k * n + 1, (n * 17 + k) as u64), n, 1)
    };
    let bias = values(n, 99);
    let packed = PackedB::from_strided(isa, &braw, k, n, rs, cs);
    for use_bias in [false, true] {
        let bias = use_bias.then_some(bias.as_slice());
        let sentinel = 12345.0f32;
        let mut c = vec![sentinel; m * ldc + 5];
        gemm(m, &a, lda, &packed, bias, &mut c, ldc);
        let tol = 1e-5 * (k as f64 + 1.0);
        for i in 0..m {
            for j in 0..ldc {
                let got = c[i * ldc + j];
                if j >= n {
                    if got != sentinel {
                        return Err(format!("{isa:?}: m{m} k{k} n{n} wrote past n at ({i},{j})"));
                    }
                    continue;
                }
                let mut want = bias.map_or(0.0, |v| f64::from(v[j]));
                for p in 0..k {
                    want += f64::from(a[i * lda + p]) * f64::from(braw[p * rs + j * cs]);
                }
                if (f64::from(got) - want).abs() > tol {
                    return Err(format!(
                        "{isa:?} m{m} k{k} n{n} lda{lda} ldc{ldc} trans {trans} bias {use_bias} \
                         at ({i},{j}): {got} vs {want}"
                    ));
                }
            }
        }
        if c[m * ldc..].iter().any(|&v| v != sentinel) {
            return Err(format!("{isa:?}: m{m} k{k} n{n} wrote past m"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_matches_an_f64_reference_on_odd_shapes() {
        let isas = Isa::available();
        #[cfg(target_arch = "x86_64")]
        assert!(
            isas.len() >= 2,
            "this x86-64 machine should run AVX2 at least: {isas:?}"
        );
        for isa in isas {
            let cases = self_test(isa).unwrap();
            eprintln!("{}: {cases} shapes match", isa.name());
        }
    }

    #[test]
    fn repacking_reuses_the_buffer_and_gives_the_same_result() {
        for isa in Isa::available() {
            let x = values(40 * 50, 5);
            let mut p = PackedB::new(isa);
            p.pack(&x, 10, 10, 50, 1);
            p.pack(&x, 40, 50, 50, 1);
            let q = PackedB::from_row_major(isa, &x, 40, 50);
            assert_eq!(p.data, q.data);
            assert_eq!(
                (p.k(), p.n(), p.panels()),
                (40, 50, 50usize.div_ceil(isa.nr()))
            );
        }
    }

    /// GFLOP/s of each kernel on MiniLM's shapes, one thread (a measurement, not a check):
    /// `cargo test -p shoal-gemm --lib kernel_gflops -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn kernel_gflops() {
        for isa in Isa::available() {
            for (m, k, n) in [
                (4096, 384, 1152),
                (4096, 384, 1536),
                (4096, 1536, 384),
                (384, 384, 1536),
                (128, 32, 128),
                (128, 128, 32),
            ] {
                let a = values(m * k, 1);
                let b = PackedB::from_row_major(isa, &values(k * n, 2), k, n);
                let mut c = vec![0.0; m * n];
                let t0 = std::time::Instant::now();
                let mut reps = 0;
                while t0.elapsed().as_secs_f64() < 0.5 {
                    gemm(m, &a, k, &b, None, &mut c, n);
                    reps += 1;
                }
                let gf = 2.0 * (m * k * n * reps) as f64 / t0.elapsed().as_secs_f64() / 1e9;
                eprintln!(
                    "{:>9} m{m:>5} k{k:>5} n{n:>5}: {gf:6.1} GFLOP/s",
                    isa.name()
                );
            }
        }
    }

    #[test]
    fn a_wrong_kernel_would_be_caught() {
        // The checker itself must fail on a wrong result: corrupt one packed value.
        let isa = Isa::Scalar;
        let b = values(9 * 7, 3);
        let mut packed = PackedB::from_row_major(isa, &b, 9, 7);
        packed.data[5] += 100.0;
        let a = values(4 * 9, 4);
        let mut c = vec![0.0; 4 * 7];
        gemm(4, &a, 9, &packed, None, &mut c, 7);
        let want: f64 = (0..9)
            .map(|p| f64::from(a[p]) * f64::from(b[p * 7 + 5]))
            .sum();
        assert!((f64::from(c[5]) - want).abs() > 1e-3, "{} vs {want}", c[5]);
    }
}
