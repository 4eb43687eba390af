//! The `gthread` worker's Python threads: the event loop hands them complete requests and
//! awaits the response; they touch the connection only to write what it takes at once.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use pyo3::prelude::*;

use crate::driver::output::Then;
use crate::driver::{Outcome, Request};
use crate::net::Io;
use crate::wsgi::call::{self, AccessData, AppContext, Paused};

type Job = Box<dyn FnOnce() + Send>;

pub struct Pool {
    sender: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    pub fn new(size: usize) -> std::io::Result<Pool> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut threads = Vec::with_capacity(size);
        for n in 0..size.max(1) {
            let receiver = Arc::clone(&receiver);
            let thread = std::thread::Builder::new()
                .name(format!("ferrocorn-app-{n}"))
                .spawn(move || run_thread(&receiver))?;
            threads.push(thread);
        }
        Ok(Pool {
            sender: Some(sender),
            threads,
        })
    }

    /// Runs the request cycle on a pool thread.
    pub async fn run<T: Io + 'static>(
        &self,
        ctx: Arc<AppContext>,
        request: Request<T>,
    ) -> Option<Outcome<T, Paused, AccessData>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let mut outcome = Python::attach(|py| call::handle(py, &ctx, request));
            // Write what the connection takes right away, from this thread: the client gets
            // its answer without waiting for the event loop to wake up. The event loop has
            // handed the connection over with the request until `rx` resolves, so nothing
            // else writes to it; whatever is left (a full socket, an error) the event loop
            // handles as usual.
            let response = &mut outcome.response;
            if response.paused.is_none() {
                let then = Then::after_response(response.keep_alive);
                let _ = response.out.write_to(&*outcome.transport, then);
            }
            let _ = tx.send(outcome);
        });
        self.sender.as_ref()?.send(job).ok()?;
        rx.await.ok()
    }
}

fn run_thread(receiver: &Mutex<mpsc::Receiver<Job>>) {
    // Keep one Python thread state for the thread's life, so each request only takes the GIL
    // instead of creating and destroying a thread state.
    // SAFETY: standard PyGILState protocol; the GIL is released again right away.
    let (gstate, saved) = unsafe {
        let gstate = pyo3::ffi::PyGILState_Ensure();
        (gstate, pyo3::ffi::PyEval_SaveThread())
    };
    loop {
        let job = {
            let guard = receiver.lock().unwrap_or_else(|e| e.into_inner());
            guard.recv()
        };
        match job {
            Ok(job) => job(),
            Err(_) => break,
        }
    }
    // SAFETY: matches the calls above, on the same thread.
    unsafe {
        pyo3::ffi::PyEval_RestoreThread(saved);
        pyo3::ffi::PyGILState_Release(gstate);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the channel ends the threads once they finish their current request.
        self.sender.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
