//! Certificate and signature checks off the async workers.
//!
//! An SM2 verification costs a fraction of a millisecond of pure CPU, and a
//! completion may need dozens (a chain per recipient). Run inline, a burst
//! of completions would occupy every tokio worker and stall `/healthz`,
//! sockets and shutdown (issue 13). Here they run on tokio's blocking
//! threads, at most `size` at a time: the rest wait for a permit without
//! holding a worker. The work of each job is itself bounded
//! ([`bzt_core::pki::SignatureBudget`]), so a permit is never held for long.

use crate::error::ApiError;
use std::sync::Arc;
use tokio::sync::Semaphore;

pub struct CheckPool {
    /// One permit per check allowed to run at once.
    permits: Arc<Semaphore>,
}

impl CheckPool {
    /// A pool running at most `size` (at least one) checks at once.
    pub fn new(size: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(size.max(1))),
        }
    }

    /// One check at a time per CPU: checks then compete with the async
    /// workers for the CPUs, but never take them all for long.
    pub fn per_cpu() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Runs `job` on a blocking thread once a permit is free. A job that
    /// panics is logged and answered `internal`.
    pub async fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| {
            tracing::error!("the certificate check pool is closed");
            ApiError::internal()
        })?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "a certificate check failed to run");
            ApiError::internal()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn jobs_run_off_the_calling_thread_at_most_size_at_once() {
        let pool = Arc::new(CheckPool::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let caller = std::thread::current().id();
        let mut jobs = Vec::new();
        for _ in 0..6 {
            let (pool, running, most) = (pool.clone(), running.clone(), most.clone());
            jobs.push(tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(30));
                    running.fetch_sub(1, Ordering::SeqCst);
                    std::thread::current().id()
                })
                .await
                .unwrap()
            }));
        }
        // The current-thread runtime keeps answering while the jobs block.
        let ticked = tokio::time::timeout(Duration::from_millis(20), async {}).await;
        assert!(ticked.is_ok());
        for job in jobs {
            assert_ne!(job.await.unwrap(), caller);
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }
}
