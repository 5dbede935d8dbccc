//! Parallel loops: rayon natively (all cores), plain loops in wasm (one instance per Web
//! Worker gives the browser its parallelism).

// SIMD intrinsics and raw tile pointers; every unsafe block states its bounds argument.
#![allow(unsafe_code)]

use crate::kernel::{self, PackedB};
use crate::qkernel::{self, QPackedB, QuantA};

/// A raw pointer that may cross threads: the callers hand each task a disjoint region.
#[derive(Clone, Copy)]
pub struct SendPtr(pub *mut f32);
// SAFETY: only used to write disjoint regions from parallel tasks (see the call sites).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper, not the field).
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// Worker threads the parallel loops split over: rayon's pool size natively, 1 in wasm.
#[cfg(not(target_family = "wasm"))]
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Worker threads the parallel loops split over: rayon's pool size natively, 1 in wasm.
#[cfg(target_family = "wasm")]
pub fn threads() -> usize {
    1
}

/// `f(index, chunk)` for each `chunk`-long piece of `data`.
pub fn for_each_chunk<F>(data: &mut [f32], chunk: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    #[cfg(not(target_family = "wasm"))]
    {
        use rayon::prelude::*;
        if threads() > 1 && data.len() > chunk {
            data.par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(i, c)| f(i, c));
            return;
        }
    }
    for (i, c) in data.chunks_mut(chunk).enumerate() {
        f(i, c);
    }
}

/// `f(&mut state, i)` for `i in 0..n`, with one `init()` state per worker thread.
pub fn for_each_index<S, I, F>(n: usize, init: I, f: F)
where
    I: Fn() -> S + Sync + Send,
    F: Fn(&mut S, usize) + Sync + Send,
{
    #[cfg(not(target_family = "wasm"))]
    {
        use rayon::prelude::*;
        if threads() > 1 && n > 1 {
            (0..n).into_par_iter().for_each_init(&init, |s, i| f(s, i));
            return;
        }
    }
    let mut s = init();
    for i in 0..n {
        f(&mut s, i);
    }
}

/// [`kernel::gemm`] split over row blocks (and column panels when there are few rows).
pub fn gemm(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    c: &mut [f32],
    ldc: usize,
) {
    let t = threads();
    let work = m * b.k() * b.n();
    if t <= 1 || work < (1 << 20) || m == 0 || b.n() == 0 {
        kernel::gemm(m, a, lda, b, bias, c, ldc);
        return;
    }
    kernel::check(m, a, lda, b, bias, c.len(), ldc);
    let cp = SendPtr(c.as_mut_ptr());
    for_each_block(m, b.isa().mr(), b.panels(), t, |rows, pans| {
        // SAFETY: `check` passed; blocks are disjoint (rows × panels) parts of C.
        unsafe { kernel::gemm_block(rows, pans, a, lda, b, bias, cp.get(), ldc) };
    });
}

/// Split an `m`-row × `panels`-panel GEMM into disjoint blocks, ≥ 4 per thread where possible
/// (row blocks of whole `mr`-row tiles, starting at multiples of `mr`; columns split only when
/// rows alone cannot), and run `f(rows, panels)` on each in parallel.
fn for_each_block<F>(m: usize, mr: usize, panels: usize, threads: usize, f: F)
where
    F: Fn(std::ops::Range<usize>, std::ops::Range<usize>) + Sync + Send,
{
    let row_tiles = m.div_ceil(mr);
    let want = 4 * threads;
    let row_tasks = row_tiles.min(want);
    let rows_per = row_tiles.div_ceil(row_tasks) * mr;
    let row_tasks = m.div_ceil(rows_per);
    let col_tasks = want.div_ceil(row_tasks).min(panels);
    let panels_per = panels.div_ceil(col_tasks);
    let col_tasks = panels.div_ceil(panels_per);
    for_each_index(
        row_tasks * col_tasks,
        || (),
        |_, task| {
            let (ri, ci) = (task / col_tasks, task % col_tasks);
            let rows = ri * rows_per..((ri + 1) * rows_per).min(m);
            let pans = ci * panels_per..((ci + 1) * panels_per).min(panels);
            f(rows, pans);
        },
    );
}

/// [`qkernel::qgemm`] split like [`gemm`] (`A` is quantized once, on the calling thread).
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
    let t = threads();
    let work = m * b.k() * b.n();
    if t <= 1 || work < (1 << 20) || m == 0 || b.n() == 0 {
        qkernel::qgemm(m, a, lda, b, c, ldc, qa);
        return;
    }
    let mr = b.isa().mr();
    qa.quantize(m, a, lda, b.k(), mr);
    qkernel::check(m, qa, b, c.len(), ldc);
    let cp = SendPtr(c.as_mut_ptr());
    let qa = &*qa;
    for_each_block(m, mr, b.panels(), t, |rows, pans| {
        // SAFETY: `check` passed; row blocks start at multiples of mr; blocks are disjoint
        // (rows × panels) parts of C.
        unsafe { qkernel::qgemm_block(rows, pans, qa, b, cp.get(), ldc) };
    });
}
