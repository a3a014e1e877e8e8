//! Where CPU-bound evaluation runs: never on the async workers, which also
//! serve HTTP and MQTT, but on tokio's blocking threads, at most as many at
//! once as the pool has slots (by default one per core, so that a burst of
//! explain calls, a preview and a launch scan together cannot take every
//! blocking thread or starve the async ones of CPU), each job within a
//! deadline. A job whose deadline passes, or whose caller goes away, is
//! told to stop through its [`Cancellation`], which long loops read between
//! vehicles and the interpreter reads on every comprehension iteration (see
//! [`crate::guard`]); its slot is free again once it has stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::{timeout_at, Instant};

use crate::cost::MAX_RULE_SET_COST;
use crate::guard::CancelScope;
use crate::RuleEngineError;

/// How long one evaluation job (an explain, an evaluate call, one chunk of a
/// preview or a launch scan) may take, waiting for a slot included.
pub const DEFAULT_EVAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Steps of the cost model one job of a long run (a preview, a launch scan)
/// is given, to choose how many vehicles it decides: as much as one vehicle
/// may cost, a few seconds at worst, a fraction of [`DEFAULT_EVAL_TIMEOUT`];
/// the vehicles of a batch are split into several jobs so that other
/// callers get a slot in between.
pub const JOB_COST: u64 = MAX_RULE_SET_COST;

/// Whether the job's caller gave up on it.
#[derive(Debug, Clone, Default)]
pub struct Cancellation(Arc<AtomicBool>);

impl Cancellation {
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Cancels the job when the future waiting for it is dropped or done.
struct CancelOnDrop(Cancellation);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

#[derive(Debug)]
pub struct EvalPool {
    slots: Arc<Semaphore>,
    size: usize,
    timeout: Duration,
}

static SHARED: LazyLock<Arc<EvalPool>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Arc::new(EvalPool::new(cores, DEFAULT_EVAL_TIMEOUT))
});

impl EvalPool {
    /// A pool running at most `slots` jobs at once, each within `timeout`.
    pub fn new(slots: usize, timeout: Duration) -> Self {
        let size = slots.max(1);
        EvalPool {
            slots: Arc::new(Semaphore::new(size)),
            size,
            timeout,
        }
    }

    /// The process's pool, one slot per core: the rule engine service and
    /// the campaign manager's targeting share it, so that together they
    /// never evaluate on more threads than there are cores.
    pub fn shared() -> Arc<EvalPool> {
        Arc::clone(&SHARED)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Slots no job holds: a job keeps its slot until it has stopped, even
    /// after its caller got its deadline error.
    pub fn idle_slots(&self) -> usize {
        self.slots.available_permits()
    }

    /// How many items of `cost_each` steps one job of a long run should
    /// take: as many as fit in [`JOB_COST`], at least one.
    pub fn chunk_len(cost_each: u64) -> usize {
        let n = JOB_COST / cost_each.max(1);
        usize::try_from(n).unwrap_or(usize::MAX).max(1)
    }

    /// Runs `job` on a blocking thread once a slot is free. Answers
    /// [`RuleEngineError::DeadlineExceeded`] when no slot freed up or the job
    /// did not finish within the pool's timeout; the job is then told to
    /// stop, as it is when this future is dropped.
    pub async fn run<T, F>(&self, job: F) -> Result<T, RuleEngineError>
    where
        F: FnOnce(&Cancellation) -> T + Send + 'static,
        T: Send + 'static,
    {
        let deadline = Instant::now() + self.timeout;
        let cancel = Cancellation::default();
        let _on_drop = CancelOnDrop(cancel.clone());
        let permit = match timeout_at(deadline, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(RuleEngineError::Internal("evaluation pool closed".into())),
            Err(_) => {
                return Err(RuleEngineError::DeadlineExceeded(format!(
                    "no evaluation slot became free within {} (all {} busy)",
                    millis(self.timeout),
                    self.size
                )))
            }
        };
        let flag = cancel.clone();
        let handle = tokio::task::spawn_blocking(move || {
            // held until the job has really stopped, timed out or not
            let _permit = permit;
            let _scope = CancelScope::enter(Arc::clone(&flag.0));
            job(&flag)
        });
        match timeout_at(deadline, handle).await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(RuleEngineError::Internal(format!("evaluation failed: {e}"))),
            Err(_) => Err(RuleEngineError::DeadlineExceeded(format!(
                "evaluation took longer than {} and was stopped",
                millis(self.timeout)
            ))),
        }
    }
}

/// "10s", "50ms".
fn millis(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[tokio::test]
    async fn a_job_over_its_deadline_is_cancelled_and_frees_its_slot() {
        let pool = EvalPool::new(1, Duration::from_millis(20));
        let (stopped_tx, stopped) = mpsc::channel();
        let err = pool
            .run(move |cancel| {
                while !cancel.is_cancelled() {
                    std::thread::yield_now();
                }
                stopped_tx.send(()).unwrap();
            })
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "evaluation took longer than 20ms and was stopped"
        );
        stopped
            .recv_timeout(Duration::from_secs(30))
            .expect("the job saw its cancellation");
        assert_eq!(pool.run(|_| 7).await.unwrap(), 7, "the slot is free again");
    }

    #[tokio::test]
    async fn a_job_waits_for_a_slot_within_its_deadline() {
        let pool = Arc::new(EvalPool::new(1, Duration::from_millis(20)));
        let (release, wait) = mpsc::channel::<()>();
        let busy = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move {
                pool.run(move |_| wait.recv_timeout(Duration::from_secs(30)))
                    .await
            }
        });
        // the first job holds the only slot until released
        while pool.idle_slots() > 0 {
            tokio::task::yield_now().await;
        }
        let err = pool.run(|_| ()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "no evaluation slot became free within 20ms (all 1 busy)"
        );
        release.send(()).unwrap();
        let _ = busy.await.unwrap();
    }

    #[test]
    fn chunks_fit_the_job_cost() {
        assert_eq!(EvalPool::chunk_len(0), JOB_COST as usize);
        assert_eq!(EvalPool::chunk_len(JOB_COST / 10), 10);
        assert_eq!(EvalPool::chunk_len(u64::MAX), 1);
    }
}
