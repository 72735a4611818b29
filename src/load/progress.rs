//! The progress line of a long run: calls (or recipients) done, the current rate and errors,
//! on stderr so `--json` on stdout stays clean. On a terminal it rewrites one line every
//! second; in a log it writes a line every ten seconds.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters the workers of a run add to; cloned into each worker.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    done: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl Progress {
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    pub fn fail(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Prints the line until the returned guard is dropped. `what` names the unit
    /// ("calls", "recipients"); `total` is the planned length of the run, if known.
    pub fn show(&self, what: &'static str, total: Option<Duration>) -> ProgressLine {
        let stop = tokio_util::sync::CancellationToken::new();
        let (progress, token) = (self.clone(), stop.clone());
        let terminal = std::io::stderr().is_terminal();
        let every = if terminal {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        };
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut last = (started, 0u64);
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(every) => {}
                }
                let (now, done) = (Instant::now(), progress.done());
                let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, done);
                let of = total.map_or(String::new(), |t| format!(" of {:.0}", t.as_secs_f64()));
                let line = format!(
                    "{:>5.0} s{of}: {done} {what}, {rate:.0}/s now, {} errors",
                    started.elapsed().as_secs_f64(),
                    progress.failed.load(Ordering::Relaxed)
                );
                let mut err = std::io::stderr().lock();
                let _ = if terminal {
                    write!(err, "\r{line}\x1b[K")
                } else {
                    writeln!(err, "{line}")
                };
            }
            if terminal {
                let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
            }
        });
        ProgressLine {
            stop,
            task: Some(task),
        }
    }
}

/// Stops the progress line when dropped (or finished).
pub struct ProgressLine {
    stop: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressLine {
    /// Stops the line and waits until it has cleared itself.
    pub async fn finish(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
