//! A small scoped thread pool: workers sleep on a condition variable between jobs, the calling
//! thread works too, and one job runs at a time. Waking a sleeping thread costs tens of
//! microseconds, as much as a whole matmul of one decoded token, so a thread that has just
//! finished keeps looking for the next job (or for the job's end) for [`SPIN`] before it sleeps:
//! back-to-back jobs never sleep, and an idle pool spins for at most that long. A caller that finds the
//! pool busy (another session thread is using it) runs its tasks inline instead of waiting, so
//! concurrent callers never oversubscribe the cores.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a thread looks for more work before it sleeps.
pub const SPIN: Duration = Duration::from_micros(100);

type Task = dyn Fn(usize) + Sync;

/// A pointer to the running job's closure. It lives on the stack of the thread in
/// [`ThreadPool::run`], which does not return before every task has finished.
#[derive(Clone, Copy)]
struct JobPtr(*const Task);
// SAFETY: the closure is `Sync`, and `run` keeps it alive until all workers are done with it.
unsafe impl Send for JobPtr {}

struct State {
    job: Option<JobPtr>,
    generation: u64,
    next: usize,
    n_tasks: usize,
    remaining: usize,
    panicked: bool,
    shutdown: bool,
    /// Workers waiting on `work`, and whether the caller waits on `done`: a notification (a
    /// system call) is sent only when someone sleeps.
    sleeping_workers: usize,
    caller_sleeping: bool,
}

struct Inner {
    state: Mutex<State>,
    work: Condvar,
    done: Condvar,
    /// Copies of `state.generation` and `state.remaining`, read without the lock while spinning
    /// (the lock-protected values decide; these only say when to look).
    generation: AtomicU64,
    remaining: AtomicUsize,
}

/// Spins until `ready()` or [`SPIN`] has passed; returns whether `ready()` held.
fn spin_until(ready: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= SPIN {
            return ready();
        }
    }
}

/// A pool of `threads - 1` workers plus the caller.
pub struct ThreadPool {
    inner: Arc<Inner>,
    busy: Mutex<()>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ThreadPool({} threads)", self.threads)
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ThreadPool {
    /// A pool running jobs on `threads` threads (the caller and `threads - 1` workers).
    pub fn new(threads: usize) -> ThreadPool {
        let threads = threads.max(1);
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                job: None,
                generation: 0,
                next: 0,
                n_tasks: 0,
                remaining: 0,
                panicked: false,
                shutdown: false,
                sleeping_workers: 0,
                caller_sleeping: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            generation: AtomicU64::new(0),
            remaining: AtomicUsize::new(0),
        });
        let workers = (1..threads)
            .map(|i| {
                let inner = inner.clone();
                std::thread::Builder::new()
                    .name(format!("edgecut-cpu-{i}"))
                    .spawn(move || worker(&inner))
                    .expect("spawn edgecut worker thread")
            })
            .collect();
        ThreadPool {
            inner,
            busy: Mutex::new(()),
            workers,
            threads,
        }
    }

    /// Threads a job runs on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(0) .. f(n_tasks - 1)` across the pool and returns when all are done. Panics in a
    /// task are re-raised here after the others finish.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        let guard = match self.busy.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        if self.threads == 1 || n_tasks == 1 || guard.is_none() {
            (0..n_tasks).for_each(f);
            return;
        }
        // SAFETY: erases the closure's lifetime; every use of the pointer ends before this
        // function returns (we wait below until `remaining == 0` and clear `job`).
        let f: &'static Task =
            unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync + '_), &'static Task>(f) };
        let ptr = JobPtr(f as *const Task);
        let (generation, wake) = {
            let mut s = lock(&self.inner.state);
            s.job = Some(ptr);
            s.generation += 1;
            s.next = 0;
            s.n_tasks = n_tasks;
            s.remaining = n_tasks;
            s.panicked = false;
            self.inner.remaining.store(n_tasks, Ordering::Release);
            self.inner.generation.store(s.generation, Ordering::Release);
            (s.generation, s.sleeping_workers > 0)
        };
        if wake {
            self.inner.work.notify_all();
        }
        let ok = catch_unwind(AssertUnwindSafe(|| {
            take_tasks(&self.inner, ptr, generation)
        }))
        .is_ok();
        spin_until(|| self.inner.remaining.load(Ordering::Acquire) == 0);
        let mut s = lock(&self.inner.state);
        while s.remaining > 0 {
            s.caller_sleeping = true;
            s = self.inner.done.wait(s).unwrap_or_else(|e| e.into_inner());
            s.caller_sleeping = false;
        }
        s.job = None;
        let panicked = s.panicked || !ok;
        drop(s);
        drop(guard);
        if panicked {
            panic!("an edgecut CPU task panicked");
        }
    }
}

/// Takes and runs tasks of job `generation` (whose closure is `ptr`) until none are left. A
/// worker that picked up `ptr` late may find a newer job running: it must not run that job's
/// tasks with the old closure, so it stops as soon as the generation differs.
fn take_tasks(inner: &Inner, ptr: JobPtr, generation: u64) {
    loop {
        let i = {
            let mut s = lock(&inner.state);
            if s.generation != generation || s.next >= s.n_tasks {
                return;
            }
            s.next += 1;
            s.next - 1
        };
        // SAFETY: the job outlives this call (see `run`).
        let f = unsafe { &*ptr.0 };
        let ok = catch_unwind(AssertUnwindSafe(|| f(i))).is_ok();
        let mut s = lock(&inner.state);
        s.panicked |= !ok;
        s.remaining -= 1;
        inner.remaining.store(s.remaining, Ordering::Release);
        if s.remaining == 0 && s.caller_sleeping {
            inner.done.notify_all();
        }
    }
}

fn worker(inner: &Inner) {
    let mut seen = 0u64;
    loop {
        spin_until(|| inner.generation.load(Ordering::Acquire) != seen);
        let (ptr, generation) = {
            let mut s = lock(&inner.state);
            while !s.shutdown && (s.generation == seen || s.job.is_none()) {
                s.sleeping_workers += 1;
                s = inner.work.wait(s).unwrap_or_else(|e| e.into_inner());
                s.sleeping_workers -= 1;
            }
            if s.shutdown {
                return;
            }
            seen = s.generation;
            (s.job.expect("job present"), s.generation)
        };
        take_tasks(inner, ptr, generation);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        lock(&self.inner.state).shutdown = true;
        self.inner.work.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Threads this process may use: `EDGECUT_THREADS` if set, else the cores the OS allows it
/// (affinity mask and cgroup quota, as `std::thread::available_parallelism` reports).
pub fn default_threads() -> usize {
    std::env::var("EDGECUT_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_every_task_once_across_threads_and_jobs() {
        let pool = ThreadPool::new(3);
        for n in [1, 2, 7, 64] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn many_short_jobs_back_to_back() {
        // Regression: a worker waking late must not run a newer job's tasks with an older
        // job's closure (seen as a segfault in `edgecut bench`).
        let pool = ThreadPool::new(2);
        for round in 0..20_000usize {
            let want = round % 7;
            let hits = AtomicUsize::new(0);
            pool.run(2, &|_| {
                hits.fetch_add(want, Ordering::Relaxed);
            });
            assert_eq!(hits.load(Ordering::Relaxed), 2 * want);
        }
    }

    #[test]
    fn concurrent_callers_and_panics() {
        let pool = Arc::new(ThreadPool::new(2));
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        pool.run(4, &|_| {
                            total.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 50 * 4);
        let r = catch_unwind(AssertUnwindSafe(|| pool.run(4, &|i| assert!(i != 2))));
        assert!(r.is_err());
        // The pool still works after a panicking job.
        let n = AtomicUsize::new(0);
        pool.run(5, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 5);
    }
}
