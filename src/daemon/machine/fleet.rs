//! The watch at fleet scale, simulated: N daemons' own decision machines (the real `Machine`:
//! its interval, ±10% jitter and throttling back-off) against a model of AWS's quotas, a token
//! bucket per service (S3 HEAD for the release marker, SSM for a full check), in simulated time
//! (no sleeping: each machine is driven at its next deadline). A release is published at a given
//! moment (the marker rewritten, or, without a marker, the parameters changed); the report says
//! how many calls each service saw per second and how long until every instance noticed.
//!
//! What it models, and what not: a watch is one HEAD with a marker, or a full check (three SSM
//! calls: a DescribeParameters and, typically, two more sources) without one or once the marker
//! changed; a call refused by the bucket is a throttled watch (the SDK's own retries are left
//! out: they only add calls). A noticed change is synced at once. The numbers are AWS's
//! documented defaults: SSM about 40 requests per second per account and region, S3 5,500
//! GET/HEAD per second per prefix.
//!
//! `cargo test --lib fleet -- --nocapture` prints the figures; `KICKY_FLEET=10000` sets the size.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use tokio::time::Instant;

use super::{Effect, Event, Machine, SyncOutcome, Timing, WatchOutcome};

/// A service's rate limit: `rate` requests a second, bursts up to `burst`.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, start: Instant) -> Bucket {
        Bucket {
            rate,
            burst: rate,
            tokens: rate,
            at: start,
        }
    }

    /// Takes `n` tokens at `now`, if there are.
    fn take(&mut self, n: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
pub struct Report {
    pub instances: usize,
    pub marker: bool,
    /// Highest calls in one simulated second, and the average, per service.
    pub s3_peak: u64,
    pub s3_mean: f64,
    pub ssm_peak: u64,
    pub ssm_mean: f64,
    pub throttled: u64,
    /// From the release to the last instance seeing it (the marker's new ETag, or the new
    /// versions in a full check); `None`: not all within the horizon.
    pub all_noticed: Option<Duration>,
    /// From the release to the last instance having applied it (its sync read the new values).
    pub all_applied: Option<Duration>,
}

const SSM_CALLS_PER_FULL_CHECK: f64 = 3.0;
/// A sync of a changed release reads the values: a GetParameters (and the secrets' batch).
const SSM_CALLS_PER_SYNC: f64 = 2.0;

/// Simulates `instances` daemons watching every `interval` for `horizon`, a release at `release`.
pub fn simulate(
    instances: usize,
    interval: Duration,
    marker: bool,
    release: Duration,
    horizon: Duration,
) -> Report {
    let start = Instant::now();
    let timing = Timing {
        watch_interval: interval,
        abandon_after: 5,
        health_every: Duration::from_secs(10),
        target_every: Duration::from_secs(2),
    };
    let ok = SyncOutcome {
        status: 0,
        text: String::new(),
        line: String::new(),
        at: String::new(),
        held: None,
        warm: false,
    };
    let mut machines = Vec::with_capacity(instances);
    let mut queue = BinaryHeap::new();
    for i in 0..instances {
        let (mut m, _) = Machine::new(timing.clone());
        // In service already, booted at spread-out moments over one interval.
        let booted = start + interval.mul_f64(fastrand::f64());
        m.handle(Event::Synced(ok.clone()), booted);
        if let Some(at) = m.next_deadline() {
            queue.push(Reverse((at, i)));
        }
        machines.push(m);
    }
    let mut s3 = Bucket::new(5500.0, start);
    let mut ssm = Bucket::new(40.0, start);
    let seconds = horizon.as_secs() as usize + 1;
    let (mut s3_calls, mut ssm_calls) = (vec![0u64; seconds], vec![0u64; seconds]);
    let mut noticed = vec![false; instances];
    let mut applied = vec![false; instances];
    let (mut last_notice, mut last_apply) = (None, None);
    // Whether each instance's last full check found the release it marks applied (the marker
    // counts as seen only then).
    let mut settled = vec![true; instances];
    let mut throttled = 0;
    let released_at = start + release;
    while let Some(Reverse((at, i))) = queue.pop() {
        if at > start + horizon {
            break;
        }
        let second = at.duration_since(start).as_secs() as usize;
        let effects = machines[i].handle(Event::Tick, at);
        if effects.contains(&Effect::Watch) {
            let released = at >= released_at;
            let full = match marker {
                true => {
                    s3_calls[second] += 1;
                    if !s3.take(1.0, at) {
                        throttled += 1;
                        machines[i]
                            .handle(Event::Watched(WatchOutcome::Failed("SlowDown".into())), at);
                        requeue(&mut queue, &machines[i], i);
                        continue;
                    }
                    if released && !noticed[i] {
                        noticed[i] = true;
                        last_notice = Some(at.duration_since(released_at));
                    }
                    !(settled[i] && (!released || applied[i]))
                }
                false => true,
            };
            let outcome = if !full {
                WatchOutcome::Unchanged
            } else {
                ssm_calls[second] += SSM_CALLS_PER_FULL_CHECK as u64;
                match ssm.take(SSM_CALLS_PER_FULL_CHECK, at) {
                    false => {
                        throttled += 1;
                        WatchOutcome::Failed("ThrottlingException: Rate exceeded".into())
                    }
                    true if released && !applied[i] => {
                        if !noticed[i] {
                            noticed[i] = true;
                            last_notice = Some(at.duration_since(released_at));
                        }
                        settled[i] = false;
                        WatchOutcome::Changed(vec!["release".into()])
                    }
                    true => {
                        settled[i] = true;
                        WatchOutcome::Unchanged
                    }
                }
            };
            let effects = machines[i].handle(Event::Watched(outcome), at);
            if effects.iter().any(|e| matches!(e, Effect::Sync { .. })) {
                ssm_calls[second] += SSM_CALLS_PER_SYNC as u64;
                let synced = match ssm.take(SSM_CALLS_PER_SYNC, at) {
                    true => {
                        applied[i] = true;
                        last_apply = Some(at.duration_since(released_at));
                        ok.clone()
                    }
                    false => {
                        throttled += 1;
                        SyncOutcome {
                            status: 1,
                            line: "ThrottlingException".into(),
                            ..ok.clone()
                        }
                    }
                };
                machines[i].handle(Event::Synced(synced), at);
            }
        }
        requeue(&mut queue, &machines[i], i);
    }
    let span = &s3_calls[release.as_secs() as usize..];
    let mean = |calls: &[u64]| calls.iter().sum::<u64>() as f64 / calls.len().max(1) as f64;
    Report {
        instances,
        marker,
        s3_peak: s3_calls.iter().copied().max().unwrap_or(0),
        s3_mean: mean(span),
        ssm_peak: ssm_calls.iter().copied().max().unwrap_or(0),
        ssm_mean: mean(&ssm_calls[release.as_secs() as usize..]),
        throttled,
        all_noticed: noticed.iter().all(|n| *n).then_some(last_notice).flatten(),
        all_applied: applied.iter().all(|a| *a).then_some(last_apply).flatten(),
    }
}

fn requeue(queue: &mut BinaryHeap<Reverse<(Instant, usize)>>, m: &Machine, i: usize) {
    if let Some(at) = m.next_deadline() {
        queue.push(Reverse((at, i)));
    }
}

#[test]
// A simulation's figures, for the README: no value of anyone's in them.
#[allow(clippy::disallowed_macros)]
fn a_fleet_with_a_release_marker_notices_a_release_within_quota() {
    let n: usize = std::env::var("KICKY_FLEET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let interval = Duration::from_secs(60);
    let horizon = Duration::from_secs(2 * 3600);
    let release = Duration::from_secs(120);
    let with = simulate(n, interval, true, release, horizon);
    let without = simulate(n, interval, false, release, horizon);
    for r in [&with, &without] {
        println!(
            "fleet of {}, watch every 60 s, {}: S3 {:.0}/s (peak {}), SSM {:.1}/s (peak {}), {} throttled calls; every instance saw the release in {}, applied it in {}",
            r.instances,
            if r.marker { "release marker" } else { "every source" },
            r.s3_mean,
            r.s3_peak,
            r.ssm_mean,
            r.ssm_peak,
            r.throttled,
            r.all_noticed.map_or("(not within 2 h)".to_string(), |d| format!("{:.0} s", d.as_secs_f64())),
            r.all_applied.map_or("(not within 2 h)".to_string(), |d| format!("{:.0} s", d.as_secs_f64())),
        );
    }
    // With the marker every instance sees the release within one interval and its jitter; how
    // fast all apply it is SSM's quota: each needs its full check and its sync's reads, so
    // (3 + 2) calls x N / 40 per second at best, and the back-off stretches the tail.
    let noticed = with.all_noticed.expect("every instance saw the release");
    assert!(
        noticed <= interval.mul_f64(1.1) + Duration::from_secs(1),
        "{with:?}"
    );
    let applied = with
        .all_applied
        .expect("every instance applied the release");
    let floor = Duration::from_secs_f64(5.0 * n as f64 / 40.0);
    assert!(
        applied >= floor && applied <= floor * 5 + interval * 8,
        "{with:?}"
    );
    assert!(with.s3_peak <= 5500, "{with:?}");
    // Without it, at this size SSM is held at its quota by the watch alone.
    if n >= 1000 {
        assert!(without.ssm_mean > 30.0, "{without:?}");
    }
}
