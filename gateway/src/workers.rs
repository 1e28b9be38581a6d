//! Connection workers: one single-threaded tokio runtime per thread, each connection served
//! start to end on one of them (round robin), the way pingora runs without work stealing.
//!
//! Why not the multi-threaded runtime for connections: a request's path is several tasks (the
//! connection, hyper's per-stream task, the upstream h2 connection). On a work-stealing runtime
//! each wakeup can land on another thread — a futex wake and an idle CPU brought up, per hop.
//! Measured on the 2-core bench VM: ~30% less CPU per request with the stream's tasks on one
//! thread (BENCHMARKS.md). The accept loops, DNS and the admin side stay on the main runtime.

use std::{
    future::Future,
    sync::atomic::{AtomicUsize, Ordering},
};

use tokio::runtime::{Builder, Handle};

thread_local! {
    static INDEX: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// The worker this thread is (`usize::MAX` off the workers): per-worker state such as the
/// upstream connections is keyed by it, so a request never wakes another worker's thread.
pub fn current() -> usize {
    INDEX.with(|i| i.get())
}

#[derive(Debug, thiserror::Error)]
pub enum WorkersError {
    #[error("cannot start worker runtime {index}: {source}")]
    Start {
        index: usize,
        source: std::io::Error,
    },
}

pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

impl Workers {
    /// Start `n` worker threads; 0 means one per available CPU.
    pub fn start(n: usize) -> Result<Self, WorkersError> {
        let n = if n == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            n
        };
        let mut handles = Vec::with_capacity(n);
        for index in 0..n {
            let rt = Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("gw-worker-{index}"))
                .build()
                .map_err(|source| WorkersError::Start { index, source })?;
            handles.push(rt.handle().clone());
            std::thread::Builder::new()
                .name(format!("gw-worker-{index}"))
                .spawn(move || {
                    INDEX.with(|i| i.set(index));
                    rt.block_on(std::future::pending::<()>())
                })
                .map_err(|source| WorkersError::Start { index, source })?;
        }
        Ok(Self {
            handles,
            next: AtomicUsize::new(0),
        })
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Run `f` on the next worker. Sockets `f` uses must be registered there: pass std sockets
    /// and convert them inside `f` (a tokio socket stays with the runtime that made it).
    pub fn spawn<F>(&self, f: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(f);
    }
}
