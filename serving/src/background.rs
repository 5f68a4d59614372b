//! A named thread that runs until told to stop: the replicas' advertiser and the warm standbys'
//! follower each own one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A thread running a loop that checks its stop flag; stopped (and joined) by [`Background::stop`],
/// told to stop (not joined) when dropped.
pub struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Background {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Background")
            .field("running", &self.thread.is_some())
            .finish_non_exhaustive()
    }
}

impl Background {
    /// Starts `run` on a thread named `name`; `run` returns once the flag it gets is set.
    pub fn spawn(
        name: &str,
        run: impl FnOnce(&AtomicBool) + Send + 'static,
    ) -> std::io::Result<Background> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(&thread_stop))?;
        Ok(Background {
            stop,
            thread: Some(thread),
        })
    }

    /// Sets the flag and waits for the thread to finish.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
