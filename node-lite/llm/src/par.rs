//! A small team of threads for the forward pass: `run(f)` calls `f(0)` on the caller and
//! `f(1..n)` on persistent helpers, and returns when all are done.
//!
//! Decoding one token makes ~150 parallel steps (a handful per layer), each a few µs of
//! work; a general pool's fork/join (rayon's `install` + `par_chunks`) costs about as much as
//! the work, so two threads decoded *slower* than one. Here a step is one release store to
//! a generation counter that the helpers spin on, and one counter they bump when done; a
//! helper that has spun ~50 µs without work parks on a condition variable, so an idle model
//! costs no CPU. Without the `threads` feature (the browser build) the team is the caller.

#[cfg(feature = "threads")]
mod imp {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    type Job = *const (dyn Fn(usize) + Sync);

    struct Shared {
        /// Bumped (release) to publish a job in `job`.
        generation: AtomicU64,
        /// The current job; valid while `run` waits (it borrows the caller's closure).
        job: Mutex<Option<JobPtr>>,
        /// Helpers finished with the current generation.
        done: AtomicUsize,
        /// A helper's job panicked.
        panicked: AtomicBool,
        stop: AtomicBool,
        sleepers: Mutex<usize>,
        wake: Condvar,
    }

    #[derive(Clone, Copy)]
    struct JobPtr(Job);
    // SAFETY: the pointee is `Sync` and outlives every use (see `Team::run`).
    unsafe impl Send for JobPtr {}

    /// See the module docs.
    pub struct Team {
        n: usize,
        shared: Arc<Shared>,
        helpers: Vec<JoinHandle<()>>,
        /// `run` is not reentrant: one job at a time.
        busy: Mutex<()>,
    }

    impl std::fmt::Debug for Team {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Team").field("n", &self.n).finish()
        }
    }

    const SPIN: Duration = Duration::from_micros(50);

    fn helper(shared: Arc<Shared>, index: usize) {
        let mut seen = 0u64;
        loop {
            // Wait for a new generation: spin, then park.
            let start = Instant::now();
            let mut spins = 0u32;
            loop {
                if shared.stop.load(Ordering::Acquire) {
                    return;
                }
                let g = shared.generation.load(Ordering::Acquire);
                if g != seen {
                    seen = g;
                    break;
                }
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) && start.elapsed() > SPIN {
                    let mut sleepers = shared.sleepers.lock().unwrap_or_else(|e| e.into_inner());
                    *sleepers += 1;
                    while shared.generation.load(Ordering::Acquire) == seen
                        && !shared.stop.load(Ordering::Acquire)
                    {
                        sleepers = shared
                            .wake
                            .wait(sleepers)
                            .unwrap_or_else(|e| e.into_inner());
                    }
                    *sleepers -= 1;
                } else {
                    std::hint::spin_loop();
                }
            }
            let job = *shared.job.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(JobPtr(f)) = job {
                // SAFETY: `run` keeps the closure alive until every helper bumped `done`.
                let f = unsafe { &*f };
                if catch_unwind(AssertUnwindSafe(|| f(index))).is_err() {
                    shared.panicked.store(true, Ordering::Release);
                }
            }
            shared.done.fetch_add(1, Ordering::AcqRel);
        }
    }

    impl Team {
        /// A team of `n` threads (the caller and `n − 1` helpers; `n` ≥ 1).
        pub fn new(n: usize) -> Self {
            let n = n.max(1);
            let shared = Arc::new(Shared {
                generation: AtomicU64::new(0),
                job: Mutex::new(None),
                done: AtomicUsize::new(0),
                panicked: AtomicBool::new(false),
                stop: AtomicBool::new(false),
                sleepers: Mutex::new(0),
                wake: Condvar::new(),
            });
            let mut helpers = Vec::new();
            for i in 1..n {
                let s = Arc::clone(&shared);
                match std::thread::Builder::new()
                    .name(format!("shoal-llm-{i}"))
                    .spawn(move || helper(s, i))
                {
                    Ok(h) => helpers.push(h),
                    Err(_) => break, // fewer threads than asked: still correct
                }
            }
            Team {
                n: helpers.len() + 1,
                shared,
                helpers,
                busy: Mutex::new(()),
            }
        }

        /// Threads in the team.
        pub fn n(&self) -> usize {
            self.n
        }

        /// `f(i)` for every `i < n`, `f(0)` on this thread; returns when all returned.
        /// A panic in any of them is re-raised here.
        pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
            if self.n == 1 {
                f(0);
                return;
            }
            let _one = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            let s = &*self.shared;
            // SAFETY: erase the borrow's lifetime to store it; this function does not return
            // (even by unwinding: the helpers' panics are caught, ours is caught below) before
            // every helper has finished with it and the slot is cleared.
            let ptr: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
            *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(JobPtr(ptr));
            s.done.store(0, Ordering::Release);
            s.generation.fetch_add(1, Ordering::AcqRel);
            if *s.sleepers.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
                s.wake.notify_all();
            }
            let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
            let helpers = self.n - 1;
            let mut spins = 0u32;
            while s.done.load(Ordering::Acquire) < helpers {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(1024) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
            if let Err(p) = mine {
                std::panic::resume_unwind(p);
            }
            if s.panicked.swap(false, Ordering::AcqRel) {
                panic!("a shoal-llm worker thread panicked");
            }
        }
    }

    impl Drop for Team {
        fn drop(&mut self) {
            self.shared.stop.store(true, Ordering::Release);
            {
                let _g = self
                    .shared
                    .sleepers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                self.shared.wake.notify_all();
            }
            for h in self.helpers.drain(..) {
                let _ = h.join();
            }
        }
    }
}

#[cfg(not(feature = "threads"))]
mod imp {
    /// The caller alone (no threads in this build).
    #[derive(Debug)]
    pub struct Team;

    impl Team {
        /// A team of one, whatever `n` is.
        pub fn new(_n: usize) -> Self {
            Team
        }

        /// Threads in the team: 1.
        pub fn n(&self) -> usize {
            1
        }

        /// `f(0)`.
        pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
            f(0);
        }
    }
}

pub use imp::Team;

/// Part `i` of `n` near-equal contiguous parts of `0..len`.
pub fn split(len: usize, n: usize, i: usize) -> (usize, usize) {
    let per = len / n;
    let extra = len % n;
    let start = i * per + i.min(extra);
    let end = start + per + usize::from(i < extra);
    (start, end)
}

/// A raw view of an output buffer that threads write disjoint parts of.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: users write disjoint ranges only (each caller documents its partition).
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub(crate) fn new(s: &mut [f32]) -> Self {
        SharedMut {
            ptr: s.as_mut_ptr(),
            len: s.len(),
        }
    }

    /// Elements in the buffer.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Pointer to element `i`, with room for `n` elements from there.
    ///
    /// # Panics
    /// If `i + n` exceeds the buffer.
    pub(crate) fn at(&self, i: usize, n: usize) -> *mut f32 {
        assert!(
            i.checked_add(n).is_some_and(|e| e <= self.len),
            "output index out of range"
        );
        // SAFETY: i ≤ len (asserted), so the offset stays inside the allocation.
        unsafe { self.ptr.add(i) }
    }

    /// Copy `v` to elements `i..i + v.len()`.
    ///
    /// # Safety
    /// No other thread reads or writes those elements meanwhile, and the buffer this view
    /// came from is alive and not otherwise borrowed.
    ///
    /// # Panics
    /// If the range exceeds the buffer.
    pub(crate) unsafe fn write_slice(&self, i: usize, v: &[f32]) {
        let p = self.at(i, v.len());
        // SAFETY: in bounds (checked by `at`); exclusive by the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p, v.len()) };
    }
}

#[cfg(all(test, feature = "threads"))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_index_runs_once_per_call_many_times() {
        let team = Team::new(3);
        let hits: Vec<AtomicUsize> = (0..team.n()).map(|_| AtomicUsize::new(0)).collect();
        for _ in 0..10_000 {
            team.run(&|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
        }
        for h in &hits {
            assert_eq!(h.load(Ordering::Relaxed), 10_000);
        }
        // After a pause long enough to park, the helpers wake up again.
        std::thread::sleep(std::time::Duration::from_millis(20));
        team.run(&|i| {
            hits[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 10_001));
    }

    #[test]
    fn a_helper_panic_surfaces_in_the_caller_and_the_team_survives() {
        let team = Team::new(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            team.run(&|i| assert!(i != 1, "boom"));
        }));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        team.run(&|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn split_covers_the_range_without_overlap() {
        for len in [0usize, 1, 7, 24, 6144] {
            for n in 1..5 {
                let mut next = 0;
                for i in 0..n {
                    let (a, b) = split(len, n, i);
                    assert_eq!(a, next);
                    next = b;
                }
                assert_eq!(next, len);
            }
        }
    }
}
