//! `--threads N` above 1: long-lived Python threads that run requests the I/O thread hands
//! them. With one thread there is no pool: the I/O thread calls the app itself.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Sender};
use pyo3::prelude::*;
use tokio::sync::oneshot;

use crate::wsgi::handler::{handle, Exchange, Outcome};
use crate::wsgi::Context;

type Job = (Exchange, oneshot::Sender<Outcome>);

pub(super) struct Pool {
    /// Dropping it ends every thread once the queue is empty.
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    pub(super) fn start(ctx: Arc<Context>, n: usize) -> Pool {
        let (tx, rx) = unbounded::<Job>();
        let threads = (0..n)
            .map(|i| {
                let rx = rx.clone();
                let ctx = ctx.clone();
                std::thread::Builder::new()
                    .name(format!("qiao-app-{i}"))
                    .spawn(move || {
                        // Attached once for the thread's life, detached only to wait: a
                        // Python thread state made per request (attach on a bare thread)
                        // would cost its creation and lose thread-locals every time.
                        crate::wsgi::on_app_thread(Some((ctx.clone(), i)));
                        Python::attach(|py| {
                            while let Ok((ex, reply)) = py.detach(|| rx.recv()) {
                                let outcome = handle(py, &ctx, ex, i);
                                let _ = reply.send(outcome);
                            }
                        })
                    })
                    .expect("cannot start an application thread")
            })
            .collect();
        Pool {
            jobs: Some(tx),
            threads,
        }
    }

    /// Runs one request on a pool thread; `None` if the thread died.
    pub(super) async fn run(&self, ex: Exchange) -> Option<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.jobs.as_ref()?.send((ex, tx)).ok()?;
        rx.await.ok()
    }

    /// Lets the threads finish their queue and waits for them, up to `limit` (call
    /// without the GIL): how many are still running then (an app stuck in its own code),
    /// left to finish on their own.
    pub(super) fn stop(mut self, limit: Duration) -> usize {
        self.jobs.take();
        let deadline = Instant::now() + limit;
        while !self.threads.iter().all(|t| t.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let (done, running): (Vec<_>, Vec<_>) =
            self.threads.drain(..).partition(|t| t.is_finished());
        for t in done {
            let _ = t.join();
        }
        running.len()
    }
}
