//! The one place the agent itself retries (the AWS SDK retries its own calls): exponential backoff
//! with full jitter, bounded in attempts and in total time.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often and how long to retry.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub attempts: u32,
    pub initial: Duration,
    pub max_delay: Duration,
    /// No new attempt starts after this much time since the first.
    pub deadline: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            attempts: 5,
            initial: Duration::from_millis(200),
            max_delay: Duration::from_secs(8),
            deadline: Duration::from_secs(120),
        }
    }
}

impl Backoff {
    /// For calls that must get through in the end (the lifecycle hook's: giving up on them gets a
    /// healthy instance terminated): 1 s doubling to 20 s, full jitter, no bound in attempts or
    /// time. Only errors the caller deems transient are retried; the caller runs it in a task of
    /// its own, so nothing waits on it but what needs its answer.
    pub fn patient() -> Backoff {
        Backoff {
            attempts: u32::MAX,
            initial: Duration::from_secs(1),
            max_delay: Duration::from_secs(20),
            deadline: Duration::MAX,
        }
    }

    /// The wait before retry number `retry` (1-based): a random time up to `initial * 2^(retry-1)`,
    /// capped at `max_delay` ("full jitter", so many instances booting together spread out).
    pub fn delay(&self, retry: u32) -> Duration {
        self.ceiling(retry).mul_f64(fastrand::f64())
    }

    /// The most [`Backoff::delay`] waits before retry number `retry` (1-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        self.initial
            .saturating_mul(1 << (retry - 1).min(16))
            .min(self.max_delay)
    }

    /// Runs `op` until it succeeds, fails with an error `transient` refuses, or the bounds are hit.
    /// The last error is returned.
    pub async fn retry<T, E, F, Fut>(
        &self,
        what: &str,
        transient: impl Fn(&E) -> bool,
        mut op: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(err) => {
                    let out_of_time = started.elapsed() >= self.deadline;
                    if attempt >= self.attempts || out_of_time || !transient(&err) {
                        return Err(err);
                    }
                    let delay = self.delay(attempt);
                    tracing::warn!(attempt, ?delay, "{what} failed, retrying: {err:#}");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Patient: a transient error is retried past any count or time a bounded policy allows,
    /// with waits that never exceed 20 s; a final one is not retried.
    #[tokio::test(start_paused = true)]
    async fn patient_retries_transient_errors_until_they_pass() {
        let calls = Cell::new(0u32);
        let started = Instant::now();
        let result = Backoff::patient()
            .retry(
                "op",
                |e: &String| e == "throttled",
                || {
                    calls.set(calls.get() + 1);
                    let n = calls.get();
                    async move {
                        match n {
                            ..=40 => Err("throttled".to_string()),
                            _ => Ok(n),
                        }
                    }
                },
            )
            .await;
        assert_eq!(result, Ok(41));
        let took = started.elapsed();
        assert!(took <= Duration::from_secs(40 * 20), "{took:?}");
        assert!(
            took > Duration::from_secs(120),
            "{took:?}: backoff grew to its cap"
        );
        assert_eq!(Backoff::patient().ceiling(30), Duration::from_secs(20));

        calls.set(0);
        let denied: Result<u32, String> = Backoff::patient()
            .retry(
                "op",
                |e: &String| e == "throttled",
                || {
                    calls.set(calls.get() + 1);
                    async { Err("AccessDenied".to_string()) }
                },
            )
            .await;
        assert!(denied.is_err());
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn delays_grow_and_stay_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..Default::default()
        };
        for _ in 0..100 {
            assert!(b.delay(1) <= Duration::from_millis(100));
            assert!(b.delay(3) <= Duration::from_millis(400));
            assert!(b.delay(30) <= Duration::from_secs(1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_up_to_the_bound() {
        let calls = Cell::new(0);
        let b = Backoff::default();
        let result: Result<(), String> = b
            .retry(
                "op",
                |_: &String| true,
                || {
                    calls.set(calls.get() + 1);
                    async { Err("busy".to_string()) }
                },
            )
            .await;
        assert_eq!(result, Err("busy".to_string()));
        assert_eq!(calls.get(), 5);

        calls.set(0);
        let result = b
            .retry(
                "op",
                |_: &String| true,
                || {
                    calls.set(calls.get() + 1);
                    let n = calls.get();
                    async move {
                        if n < 3 {
                            Err("busy".to_string())
                        } else {
                            Ok(n)
                        }
                    }
                },
            )
            .await;
        assert_eq!(result, Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let calls = Cell::new(0);
        let result: Result<(), String> = Backoff::default()
            .retry(
                "op",
                |e: &String| e != "denied",
                || {
                    calls.set(calls.get() + 1);
                    async { Err("denied".to_string()) }
                },
            )
            .await;
        assert!(result.is_err());
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_stops_retries() {
        let calls = Cell::new(0);
        let b = Backoff {
            attempts: 1000,
            deadline: Duration::from_secs(5),
            ..Default::default()
        };
        let _: Result<(), String> = b
            .retry(
                "op",
                |_: &String| true,
                || {
                    calls.set(calls.get() + 1);
                    async {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        Err("slow".to_string())
                    }
                },
            )
            .await;
        assert!(calls.get() <= 4, "{}", calls.get());
    }
}
