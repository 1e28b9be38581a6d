//! Connection workers: one single-threaded tokio runtime per thread, each connection served
//! start to end on one of them, the way pingora runs without work stealing. A new connection
//! goes to the worker serving the fewest (the lowest-numbered one on a tie), not round robin:
//! under light load the same thread stays busy and warm — its caches, its upstream connections,
//! and the scheduler's picture of it — instead of every other connection waking a thread that
//! has gone cold. Measured on the bench VM: a new connection on a cold worker ran its first
//! few hundred requests ~20–40 µs slower each (BENCHMARKS.md, issue B).
//!
//! Why not the multi-threaded runtime for connections: a request's path is several tasks (the
//! connection, hyper's per-stream task, the upstream h2 connection). On a work-stealing runtime
//! each wakeup can land on another thread — a futex wake and an idle CPU brought up, per hop.
//! Measured on the 2-core bench VM: ~30% less CPU per request with the stream's tasks on one
//! thread (BENCHMARKS.md). The accept loops, DNS and the admin side stay on the main runtime.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
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
    /// Connections each worker is serving now.
    live: Arc<[AtomicUsize]>,
}

/// Counts a connection against its worker until the connection's future ends or is dropped.
struct Live {
    live: Arc<[AtomicUsize]>,
    index: usize,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.live[self.index].fetch_sub(1, Ordering::Relaxed);
    }
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
        let live = (0..n).map(|_| AtomicUsize::new(0)).collect();
        Ok(Self { handles, live })
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The worker serving the fewest connections now; the lowest-numbered on a tie.
    fn pick(&self) -> usize {
        let mut best = 0;
        let mut least = usize::MAX;
        for (i, n) in self.live.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n < least {
                best = i;
                least = n;
            }
        }
        best
    }

    /// Run the connection `f` on the least busy worker. Sockets `f` uses must be registered
    /// there: pass std sockets and convert them inside `f` (a tokio socket stays with the
    /// runtime that made it).
    pub fn spawn<F>(&self, f: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let index = self.pick();
        self.live[index].fetch_add(1, Ordering::Relaxed);
        let live = Live {
            live: self.live.clone(),
            index,
        };
        self.handles[index].spawn(async move {
            let _live = live;
            f.await
        });
    }

    /// Connections each worker is serving now.
    #[cfg(test)]
    fn live(&self) -> Vec<usize> {
        self.live
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_until(w: &Workers, want: &[usize]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.live() != want {
            assert!(
                Instant::now() < deadline,
                "live connections per worker: {:?}, expected {want:?}",
                w.live()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A connection that runs until its sender is dropped; reports the worker it ran on.
    fn conn(
        w: &Workers,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        std::sync::mpsc::Receiver<usize>,
    ) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel();
        w.spawn(async move {
            let _ = tx.send(current());
            let _ = stopped.await;
        });
        (stop, rx)
    }

    #[test]
    fn least_busy_worker_takes_the_next_connection() {
        let w = Workers::start(3).unwrap();
        let on = |rx: &std::sync::mpsc::Receiver<usize>| {
            rx.recv_timeout(Duration::from_secs(5)).unwrap()
        };
        // Idle: one connection after another ends stays on the first worker.
        for _ in 0..3 {
            let (stop, rx) = conn(&w);
            assert_eq!(on(&rx), 0);
            drop(stop);
            wait_until(&w, &[0, 0, 0]);
        }
        // Busy: each new connection goes where fewest are served.
        let (a, ra) = conn(&w);
        let (b, rb) = conn(&w);
        let (c, rc) = conn(&w);
        assert_eq!((on(&ra), on(&rb), on(&rc)), (0, 1, 2));
        wait_until(&w, &[1, 1, 1]);
        drop(b);
        wait_until(&w, &[1, 0, 1]);
        let (d, rd) = conn(&w);
        assert_eq!(on(&rd), 1);
        let (e, re) = conn(&w);
        assert_eq!(on(&re), 0);
        wait_until(&w, &[2, 1, 1]);
        drop((a, c, d, e));
        wait_until(&w, &[0, 0, 0]);
    }
}
