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

#[cfg(not(target_family = "wasm"))]
thread_local! {
    /// Set while this thread runs [`serial`] work.
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Worker threads the parallel loops split over: rayon's pool size natively (1 inside
/// [`serial`]), 1 in wasm.
#[cfg(not(target_family = "wasm"))]
pub fn threads() -> usize {
    if SERIAL.with(std::cell::Cell::get) {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// Run `f` with every parallel loop and GEMM of this module on the calling thread: for work
/// too small to pay for waking the pool (a forward pass of one 12-token sentence ran 1.45×
/// faster on one core than with its steps split over two).
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(not(target_family = "wasm"))]
    {
        /// Puts the flag back when `f` returns or unwinds.
        struct Restore(bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                SERIAL.with(|s| s.set(self.0));
            }
        }
        let _restore = Restore(SERIAL.with(|s| s.replace(true)));
        f()
    }
    #[cfg(target_family = "wasm")]
    f()
}

/// Worker threads the parallel loops split over: rayon's pool size natively, 1 in wasm.
#[cfg(target_family = "wasm")]
pub fn threads() -> usize {
    1
}

/// Element-wise passes (and the activations' quantization) over fewer values than this run on
/// the calling thread: a LayerNorm over 128 tokens (49 k values, ≈ 20 µs) is done before a
/// second thread would have woken; each parallel region saved cuts the scheduler's share of a
/// 128-token forward pass (10 % of it with 12 regions per layer).
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 17;

/// `f(index, chunk)` for each `chunk`-long piece of `data` (on every core when `data` holds
/// at least [`PARALLEL_MIN_ELEMENTS`] values).
pub fn for_each_chunk<F>(data: &mut [f32], chunk: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    #[cfg(not(target_family = "wasm"))]
    {
        use rayon::prelude::*;
        if threads() > 1 && data.len() > chunk && data.len() >= PARALLEL_MIN_ELEMENTS {
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

/// Fewer rows than this run an integer GEMM on the calling thread: it is done (≈ 50 µs for
/// 12 × 384 × 1152 on AVX-512 VNNI) before woken rayon workers would help (measured on 2
/// cores: 12 and 48 rows ran 1.5–2.5× slower on both cores than on one; a whole 128-token
/// forward pass ran 1.5× faster with its GEMMs split than on one core).
pub const QGEMM_MIN_PARALLEL_ROWS: usize = 64;

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

/// [`QuantA::quantize`] with the rows split over `threads` (pieces of ≥ 16 rows).
#[cfg_attr(target_family = "wasm", allow(unused_variables))]
fn quantize(m: usize, a: &[f32], lda: usize, k: usize, mr: usize, qa: &mut QuantA, threads: usize) {
    let (data, scale) = qa.prepare(m, a, lda, k, mr);
    #[cfg(not(target_family = "wasm"))]
    if threads > 1 && m > 16 && k > 0 && m * k >= PARALLEL_MIN_ELEMENTS {
        use rayon::prelude::*;
        let (k2, rows_per) = (k.div_ceil(2), m.div_ceil(threads).max(16));
        data.par_chunks_mut(rows_per * k2)
            .zip(scale.par_chunks_mut(rows_per))
            .enumerate()
            .for_each(|(i, (d, s))| qkernel::quantize_rows(i * rows_per, a, lda, k, d, s));
        return;
    }
    qkernel::quantize_rows(0, a, lda, k, data, scale);
}

/// [`qkernel::qgemm`] split like [`gemm`] (`A` quantized once per call, rows split over the
/// threads).
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
    if t <= 1 || m < QGEMM_MIN_PARALLEL_ROWS || b.n() == 0 {
        qkernel::qgemm(m, a, lda, b, c, ldc, qa);
        return;
    }
    let mr = b.isa().mr();
    quantize(m, a, lda, b.k(), mr, qa, t);
    qkernel::check(m, qa, b, c.len(), ldc);
    let cp = SendPtr(c.as_mut_ptr());
    let qa = &*qa;
    for_each_block(m, mr, b.panels(), t, |rows, pans| {
        // SAFETY: `check` passed; row blocks start at multiples of mr; blocks are disjoint
        // (rows × panels) parts of C.
        unsafe { qkernel::qgemm_block(rows, pans, qa, b, cp.get(), ldc) };
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::values;
    use crate::qkernel::{QIsa, WeightBits};

    #[test]
    fn split_integer_gemm_equals_the_single_threaded_one() {
        // Rows split over threads (and A's quantization split with them) change no bit: each C
        // element is computed by one tile, whatever block it falls in.
        for isa in QIsa::available() {
            for (m, k, n) in [
                (200, 384, 1152),
                (37, 1536, 384),
                (12, 384, 1536),
                (700, 65, 70),
            ] {
                let a = values(m * k, 5);
                let b = QPackedB::from_row_major(
                    isa,
                    WeightBits::Int12,
                    &values(k * n, 6),
                    k,
                    n,
                    Some(&values(n, 7)),
                );
                let (mut c1, mut c2) = (vec![0f32; m * n], vec![1f32; m * n]);
                qkernel::qgemm(m, &a, k, &b, &mut c1, n, &mut QuantA::default());
                qgemm(m, &a, k, &b, &mut c2, n, &mut QuantA::default());
                assert!(
                    c1.iter().zip(&c2).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{} m{m} k{k} n{n}: split result differs",
                    isa.name(WeightBits::Int12)
                );
            }
        }
    }

    /// Integer GEMM throughput per tile, one thread and all threads (multiply-adds counted as
    /// 2 ops): `cargo test -p shoal-gemm --lib integer_gops -- --ignored --nocapture` (the f32
    /// tiles: `kernel_gflops`).
    #[test]
    #[ignore]
    fn integer_gops() {
        for isa in QIsa::available() {
            for (m, k, n) in [
                (4096, 384, 1152),
                (4096, 1536, 384),
                (384, 384, 1152),
                (384, 1536, 384),
                (128, 384, 1536),
                (128, 1536, 384),
                (48, 384, 1152),
                (12, 384, 1152),
                (12, 1536, 384),
            ] {
                let a = values(m * k, 1);
                let bits = WeightBits::Int12;
                let b = QPackedB::from_row_major(isa, bits, &values(k * n, 2), k, n, None);
                let mut c = vec![0.0; m * n];
                let mut qa = QuantA::default();
                let mut rate = |parallel: bool| {
                    let t0 = std::time::Instant::now();
                    let mut reps = 0;
                    while t0.elapsed().as_secs_f64() < 0.3 {
                        if parallel {
                            qgemm(m, &a, k, &b, &mut c, n, &mut qa);
                        } else {
                            qkernel::qgemm(m, &a, k, &b, &mut c, n, &mut qa);
                        }
                        reps += 1;
                    }
                    2.0 * (m * k * n * reps) as f64 / t0.elapsed().as_secs_f64() / 1e9
                };
                let (one, all) = (rate(false), rate(true));
                eprintln!(
                    "{:>18} m{m:>5} k{k:>5} n{n:>5}: {one:6.1} GOP/s on 1 thread, {all:6.1} on {}",
                    isa.name(bits),
                    threads()
                );
            }
        }
    }
}
