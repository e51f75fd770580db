//! Streaming from Python: the generation runs on a worker thread and hands its pieces to an
//! iterator through a channel, so the caller's thread holds no lock while it waits and Ctrl-C
//! reaches it between pieces.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;

use crate::generate::Generation;
use crate::llm::Job;
use crate::{panicked, to_py, SIGNAL_CHECK};

/// A task for the generation thread.
type Task = Box<dyn FnOnce() + Send>;

/// A handle's generation thread, started by its first stream and ended with the handle. One
/// thread for every stream, not one each: the CPU kernels keep scratch buffers per thread, and
/// a new thread would fault them in again for every generation (4% of a 64-token stream).
#[derive(Default)]
pub(crate) struct Worker {
    tasks: Mutex<Option<Sender<Task>>>,
}

impl Worker {
    /// Runs `task` on the thread (after the tasks before it), starting the thread if needed.
    fn run(&self, task: Task) -> std::io::Result<()> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = tasks.as_ref() {
            match tx.send(task) {
                Ok(()) => return Ok(()),
                // The thread is gone (it cannot panic: each task catches its own); start anew.
                Err(e) => return self.spawn(&mut tasks, e.0),
            }
        }
        self.spawn(&mut tasks, task)
    }

    fn spawn(&self, tasks: &mut Option<Sender<Task>>, first: Task) -> std::io::Result<()> {
        let (tx, rx) = channel::<Task>();
        std::thread::Builder::new()
            .name("edgecut-generate".into())
            .spawn(move || {
                // Ends when the handle (the sender) is dropped.
                for task in rx {
                    task();
                }
            })?;
        tx.send(first)
            .map_err(|_| std::io::Error::other("the generation thread ended"))?;
        *tasks = Some(tx);
        Ok(())
    }
}

/// What the worker sends.
enum Msg {
    Piece(String),
    Done(edgecut::Result<(edgecut::Generation, Option<String>)>),
    Panicked,
}

/// The receiving end and what the stream has seen.
struct State {
    rx: Receiver<Msg>,
    done: bool,
    generation: Option<Py<Generation>>,
}

/// An iterator of the generated text's pieces (each valid UTF-8), as they are produced. Once
/// it is exhausted, `generation` holds the result and statistics. Breaking out of the loop, or
/// `close()`, stops the generation at its next token.
#[pyclass(frozen, module = "edgecut", name = "TextStream")]
pub struct TextStream {
    state: Mutex<State>,
    stop: Arc<AtomicBool>,
}

impl TextStream {
    /// Starts `job` on the handle's generation thread.
    pub(crate) fn start(job: Job, worker: &Worker) -> std::io::Result<TextStream> {
        let (tx, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        worker.run(Box::new(move || {
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                job.run(&mut |piece| {
                    !flag.load(Ordering::Relaxed) && tx.send(Msg::Piece(piece.into())).is_ok()
                })
            }));
            // The receiver may be gone (the stream dropped): nothing to tell then.
            let _ = tx.send(match run {
                Ok(r) => Msg::Done(r),
                Err(_) => Msg::Panicked,
            });
        }))?;
        Ok(TextStream {
            state: Mutex::new(State {
                rx,
                done: false,
                generation: None,
            }),
            stop,
        })
    }
}

impl Drop for TextStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[pymethods]
impl TextStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        loop {
            let got = py.detach(|| {
                let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if s.done {
                    return None;
                }
                Some(s.rx.recv_timeout(SIGNAL_CHECK))
            });
            let msg = match got {
                None => return Ok(None),
                Some(Ok(m)) => m,
                Some(Err(RecvTimeoutError::Timeout)) => {
                    if let Err(e) = py.check_signals() {
                        self.stop.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                    continue;
                }
                Some(Err(RecvTimeoutError::Disconnected)) => {
                    self.finish(None);
                    return Err(panicked(py));
                }
            };
            match msg {
                Msg::Piece(p) => return Ok(Some(p)),
                Msg::Done(Ok((g, fell_back))) => {
                    if let Some(why) = &fell_back {
                        crate::embed::warn_fallback(py, why)?;
                    }
                    let g = Py::new(py, Generation::new(g, fell_back))?;
                    self.finish(Some(g));
                    return Ok(None);
                }
                Msg::Done(Err(e)) => {
                    self.finish(None);
                    return Err(to_py(py, e));
                }
                Msg::Panicked => {
                    self.finish(None);
                    return Err(panicked(py));
                }
            }
        }
    }

    /// Stops the generation at its next token (the pieces already made stay readable).
    fn close(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The result once the stream is exhausted (`None` before, or after an error).
    #[getter]
    fn generation(&self, py: Python<'_>) -> Option<Py<Generation>> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.generation.as_ref().map(|g| g.clone_ref(py))
    }
}

impl TextStream {
    fn finish(&self, g: Option<Py<Generation>>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.done = true;
        s.generation = g;
    }
}
