//! The watch at fleet scale, simulated: N daemons' own decision machines (the real `Machine`:
//! its interval, ±10% jitter, throttling back-off and retries) and the watch's own decisions
//! (`daemon::watch`: when the pointer or marker is read, what a promote asks for, when it counts
//! as seen) against a model of AWS's quotas, a token bucket per service, in simulated time (no
//! sleeping: each machine is driven at its next deadline). A release is published at a given
//! moment (promoted, the marker rewritten, or the parameters changed); the report says how many
//! calls each service saw per second and how long until every instance noticed and applied it.
//!
//! What it models, and what not. With `release.store` a watch is one HEAD of the promoted
//! pointer, and a GET of it when its ETag is not the one seen; a sync of the release costs two
//! SSM calls (GetParameters by `name:version`, the registry credentials) and S3 GETs (the
//! pointer, the manifest, a file). With `watch.marker` a watch is one HEAD, or a full check
//! (three SSM calls: a DescribeParameters and, typically, two more sources) when the marker
//! moved or `watch.full_every` passed; without either, every watch is a full check. A call
//! refused by a bucket fails its watch or its sync as throttled (the SDK's own retries are left
//! out: they only add calls); a throttled sync changes nothing on the instance. The numbers are
//! AWS's documented defaults: SSM about 40 requests per second per account and region, S3 5,500
//! GET/HEAD per second per prefix. Every random draw comes from one seeded generator, so a run
//! is reproduced by its seed.
//!
//! `cargo test --lib fleet -- --nocapture` prints the figures; `KICKY_FLEET=10000` sets the size,
//! `KICKY_FLEET_SEED` the seed (default [`SEED`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{Effect, Event, Machine, SyncOutcome, Timing, WatchOutcome};
use crate::config::WatchApply;
use crate::daemon::watch::{self, PointerHead};
use crate::release::ReleaseId;
use crate::sync::state::{RunningRelease, State};

/// The seed the figures in docs/how-it-works.md were made with.
pub const SEED: u64 = 21;

/// What the fleet watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `release.store`: the promoted pointer.
    Release,
    /// `watch.marker`: one object the release process rewrites last.
    Marker,
    /// Every source at every watch.
    EverySource,
}

impl Mode {
    fn describe(self) -> &'static str {
        match self {
            Mode::Release => "release store",
            Mode::Marker => "release marker",
            Mode::EverySource => "every source",
        }
    }
}

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

/// One AWS service as the fleet sees it: its quota, and the calls made to it each second.
struct Service {
    bucket: Bucket,
    calls: Vec<u64>,
    start: Instant,
}

impl Service {
    fn new(rate: f64, start: Instant, horizon: Duration) -> Service {
        Service {
            bucket: Bucket::new(rate, start),
            calls: vec![0; horizon.as_secs() as usize + 1],
            start,
        }
    }

    /// `n` calls at `at`: whether the quota let them through.
    fn call(&mut self, n: u32, at: Instant) -> bool {
        let second = at.duration_since(self.start).as_secs() as usize;
        if let Some(calls) = self.calls.get_mut(second) {
            *calls += u64::from(n);
        }
        self.bucket.take(f64::from(n), at)
    }

    /// The busiest second, and the mean from `from` on.
    fn figures(&self, from: Duration) -> (u64, f64) {
        let span = &self.calls[(from.as_secs() as usize).min(self.calls.len())..];
        let mean = span.iter().sum::<u64>() as f64 / span.len().max(1) as f64;
        (self.calls.iter().copied().max().unwrap_or(0), mean)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub instances: usize,
    pub mode: Mode,
    pub seed: u64,
    /// Highest calls in one simulated second, and the average after the release, per service.
    pub s3_peak: u64,
    pub s3_mean: f64,
    pub ssm_peak: u64,
    pub ssm_mean: f64,
    pub throttled: u64,
    /// From the release to the last instance seeing it (the pointer's or marker's new ETag, or
    /// the new versions in a full check); `None`: not all within the horizon.
    pub all_noticed: Option<Duration>,
    /// From the release to the last instance having applied it (its sync read the new values).
    pub all_applied: Option<Duration>,
}

impl Report {
    /// The figures in one line, as docs/how-it-works.md publishes them.
    pub fn line(&self) -> String {
        let within = |d: Option<Duration>| {
            d.map_or("(not within the horizon)".to_string(), |d| {
                format!("{:.0} s", d.as_secs_f64())
            })
        };
        format!(
            "fleet of {}, watch every 60 s, {}, seed {}: S3 {:.0}/s (peak {}), SSM {:.1}/s (peak {}), {} throttled calls; every instance saw the release in {}, applied it in {}",
            self.instances,
            self.mode.describe(),
            self.seed,
            self.s3_mean,
            self.s3_peak,
            self.ssm_mean,
            self.ssm_peak,
            self.throttled,
            within(self.all_noticed),
            within(self.all_applied),
        )
    }
}

/// A full check: a DescribeParameters and, typically, two more sources.
const SSM_CALLS_PER_FULL_CHECK: u32 = 3;
/// A sync reads the values: a GetParameters (by `name:version` for a release) and the registry
/// credentials.
const SSM_CALLS_PER_SYNC: u32 = 2;
/// A sync's S3 GETs: a file; for a release also the pointer and the manifest.
const S3_CALLS_PER_SYNC: u32 = 1;
const S3_CALLS_PER_RELEASE_SYNC: u32 = 3;
/// `watch.full_every`'s default.
const FULL_EVERY: Duration = Duration::from_secs(3600);
/// `watch.retry_failed_after`'s default (nothing fails for good here: it is never reached).
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(3600);

/// One daemon: its machine and what its watch remembers.
struct Instance {
    machine: Machine,
    /// What it runs and which promote it acted on, as its syncs record them.
    state: State,
    /// The pointer's or marker's ETag when it last counted as seen, and when (the daemon's
    /// `Shared.marker`).
    seen: Option<(String, Instant)>,
    noticed: bool,
    applied: bool,
}

/// The world the fleet watches: before the release, and after.
struct World {
    mode: Mode,
    released_at: Instant,
    old: ReleaseId,
    new: ReleaseId,
}

impl World {
    fn released(&self, at: Instant) -> bool {
        at >= self.released_at
    }

    /// The pointer's (or marker's) ETag, and the release it names.
    fn pointer(&self, at: Instant) -> (&'static str, &ReleaseId) {
        match self.released(at) {
            true => ("\"b\"", &self.new),
            false => ("\"a\"", &self.old),
        }
    }
}

/// The fleet, its services, and what it has done so far.
struct Fleet {
    world: World,
    start: Instant,
    instances: Vec<Instance>,
    s3: Service,
    ssm: Service,
    throttled: u64,
    last_notice: Option<Duration>,
    last_apply: Option<Duration>,
}

impl Fleet {
    fn notice(&mut self, i: usize, at: Instant) {
        if self.world.released(at) && !self.instances[i].noticed {
            self.instances[i].noticed = true;
            self.last_notice = Some(at.duration_since(self.world.released_at));
        }
    }

    fn throttle(&mut self, why: &str) -> WatchOutcome {
        self.throttled += 1;
        WatchOutcome::Failed(why.into())
    }

    /// One watch of instance `i` at `at`, as the daemon's `watch_once` does it.
    fn watch(&mut self, i: usize, at: Instant) -> WatchOutcome {
        if self.world.mode == Mode::EverySource {
            return self.full_check(i, at);
        }
        if !self.s3.call(1, at) {
            return self.throttle("SlowDown");
        }
        self.notice(i, at);
        let (etag, promoted) = self.world.pointer(at);
        let promoted = promoted.clone();
        let seen = self.instances[i].seen.clone();
        if self.world.mode == Mode::Marker {
            if !watch::full_check_due(seen.as_ref(), etag, at, FULL_EVERY) {
                return WatchOutcome::Unchanged;
            }
            let found = self.full_check(i, at);
            if watch::marker_settled(&found) {
                self.instances[i].seen = Some((etag.to_string(), at));
            }
            return found;
        }
        let seen = seen.as_ref().map(|(etag, _)| etag.as_str());
        if watch::after_pointer_head(seen, etag) == PointerHead::Unchanged {
            return WatchOutcome::Unchanged;
        }
        if !self.s3.call(1, at) {
            return self.throttle("SlowDown");
        }
        let found = watch::decide_release(
            WatchApply::Auto,
            &self.instances[i].state,
            &promoted,
            RETRY_FAILED_AFTER,
            SystemTime::UNIX_EPOCH + at.duration_since(self.start),
        );
        if watch::pointer_settled(&found) {
            self.instances[i].seen = Some((etag.to_string(), at));
        }
        found
    }

    /// Every source's versions: changed while the release is not applied.
    fn full_check(&mut self, i: usize, at: Instant) -> WatchOutcome {
        if !self.ssm.call(SSM_CALLS_PER_FULL_CHECK, at) {
            return self.throttle("ThrottlingException: Rate exceeded");
        }
        if !self.world.released(at) || self.instances[i].applied {
            return WatchOutcome::Unchanged;
        }
        self.notice(i, at);
        WatchOutcome::Changed(vec!["release".into()])
    }

    /// One sync of instance `i` at `at`: the release as it stands then, if the quotas allow.
    fn sync(&mut self, i: usize, at: Instant) -> SyncOutcome {
        let s3_calls = match self.world.mode {
            Mode::Release => S3_CALLS_PER_RELEASE_SYNC,
            _ => S3_CALLS_PER_SYNC,
        };
        // The release is read from S3 first; the values from SSM next.
        let read = self.s3.call(s3_calls, at) && self.ssm.call(SSM_CALLS_PER_SYNC, at);
        if !read {
            self.throttled += 1;
            return SyncOutcome {
                status: 1,
                text: "ThrottlingException: Rate exceeded".into(),
                line: "ThrottlingException: Rate exceeded".into(),
                ..synced()
            };
        }
        let (_, release) = self.world.pointer(at);
        let release = release.clone();
        let instance = &mut self.instances[i];
        instance.state.release = Some(RunningRelease {
            id: release.clone(),
            images: Default::default(),
        });
        instance.state.promoted_seen = Some(release);
        if self.world.released(at) && !instance.applied {
            instance.applied = true;
            self.last_apply = Some(at.duration_since(self.world.released_at));
        }
        synced()
    }
}

fn synced() -> SyncOutcome {
    SyncOutcome {
        status: 0,
        text: String::new(),
        line: String::new(),
        at: String::new(),
        held: None,
        warm: false,
    }
}

/// Simulates `instances` daemons watching every `interval` for `horizon`, a release at `release`,
/// every random draw from `seed`.
pub fn simulate(
    instances: usize,
    interval: Duration,
    mode: Mode,
    release: Duration,
    horizon: Duration,
    seed: u64,
) -> Report {
    let mut rng = fastrand::Rng::with_seed(seed);
    // An hour in, so that the fleet's last full checks can be spread over the hour before.
    let start = Instant::now() + FULL_EVERY;
    let timing = Timing {
        watch_interval: interval,
        abandon_after: 5,
        health_every: Duration::from_secs(10),
        target_every: Duration::from_secs(2),
        spot_every: Duration::ZERO,
        drain_on_rebalance: false,
    };
    let id = |s: &str| ReleaseId::parse(s).expect("a release id");
    let world = World {
        mode,
        released_at: start + release,
        old: id("20261207T160000000Z-aaaaaa"),
        new: id("20261207T170000000Z-bbbbbb"),
    };
    let mut fleet = Fleet {
        start,
        instances: Vec::with_capacity(instances),
        s3: Service::new(5500.0, start, horizon),
        ssm: Service::new(40.0, start, horizon),
        throttled: 0,
        last_notice: None,
        last_apply: None,
        world,
    };
    let mut queue = BinaryHeap::new();
    for i in 0..instances {
        let (mut machine, _) = Machine::with_rng(timing.clone(), rng.fork());
        // In service already, running the old release, its last watch at a moment spread over
        // one interval; the pointer or marker seen, after a full check spread over the hour.
        let booted = start + interval.mul_f64(rng.f64());
        machine.handle(Event::Synced(synced()), booted);
        let seen = Some(("\"a\"".to_string(), start - FULL_EVERY.mul_f64(rng.f64())));
        let state = State {
            release: Some(RunningRelease {
                id: fleet.world.old.clone(),
                images: Default::default(),
            }),
            promoted_seen: Some(fleet.world.old.clone()),
            ..State::default()
        };
        requeue(&mut queue, &machine, i);
        fleet.instances.push(Instance {
            machine,
            state,
            seen,
            noticed: false,
            applied: false,
        });
    }
    while let Some(Reverse((at, i))) = queue.pop() {
        if at > start + horizon {
            break;
        }
        let effects = fleet.instances[i].machine.handle(Event::Tick, at);
        let mut effects = match effects.contains(&Effect::Watch) {
            true => {
                let found = fleet.watch(i, at);
                fleet.instances[i].machine.handle(Event::Watched(found), at)
            }
            false => effects,
        };
        // A sync is carried out at once (its time is left out), and may ask for another.
        while effects.iter().any(|e| matches!(e, Effect::Sync { .. })) {
            let outcome = fleet.sync(i, at);
            effects = fleet.instances[i]
                .machine
                .handle(Event::Synced(outcome), at);
        }
        requeue(&mut queue, &fleet.instances[i].machine, i);
    }
    let (s3_peak, s3_mean) = fleet.s3.figures(release);
    let (ssm_peak, ssm_mean) = fleet.ssm.figures(release);
    let all = |f: fn(&Instance) -> bool| fleet.instances.iter().all(f);
    Report {
        instances,
        mode,
        seed,
        s3_peak,
        s3_mean,
        ssm_peak,
        ssm_mean,
        throttled: fleet.throttled,
        all_noticed: all(|i| i.noticed).then_some(fleet.last_notice).flatten(),
        all_applied: all(|i| i.applied).then_some(fleet.last_apply).flatten(),
    }
}

fn requeue(queue: &mut BinaryHeap<Reverse<(Instant, usize)>>, m: &Machine, i: usize) {
    if let Some(at) = m.next_deadline() {
        queue.push(Reverse((at, i)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(60);
    const RELEASE: Duration = Duration::from_secs(120);
    const HORIZON: Duration = Duration::from_secs(2 * 3600);

    fn size() -> usize {
        std::env::var("KICKY_FLEET")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000)
    }

    fn seed() -> u64 {
        std::env::var("KICKY_FLEET_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(SEED)
    }

    /// SSM's quota floor for `n` instances applying a release: each sync's calls at 40 a second.
    fn floor(n: usize) -> Duration {
        Duration::from_secs_f64(n as f64 * f64::from(SSM_CALLS_PER_SYNC) / 40.0)
    }

    /// 10,000 instances on `release.store`: every one sees a promote within one interval and its
    /// jitter, and applies it within 1.2x of what SSM's quota allows at best.
    #[test]
    fn a_promoted_release_reaches_10000_instances_near_the_quota_floor() {
        let n = 10_000;
        let r = simulate(n, INTERVAL, Mode::Release, RELEASE, HORIZON, SEED);
        let noticed = r.all_noticed.expect("every instance saw the release");
        assert!(
            noticed <= INTERVAL.mul_f64(1.1) + Duration::from_secs(1),
            "{r:?}"
        );
        let applied = r.all_applied.expect("every instance applied the release");
        assert!(
            applied >= floor(n) && applied <= floor(n).mul_f64(1.2),
            "{r:?}"
        );
        assert!(r.s3_peak <= 5500, "{r:?}");
    }

    #[test]
    fn a_run_is_reproduced_by_its_seed() {
        for mode in [Mode::Release, Mode::Marker, Mode::EverySource] {
            let run = || simulate(300, INTERVAL, mode, RELEASE, HORIZON, 7).line();
            assert_eq!(run(), run(), "{mode:?}");
        }
        let a = simulate(300, INTERVAL, Mode::Release, RELEASE, HORIZON, 7);
        let b = simulate(300, INTERVAL, Mode::Release, RELEASE, HORIZON, 8);
        assert_ne!(a, b, "another seed, another run");
    }

    #[test]
    // A simulation's figures, for docs/how-it-works.md: no value of anyone's in them.
    #[allow(clippy::disallowed_macros)]
    fn fleet_figures() {
        let n = size();
        let runs: Vec<Report> = [Mode::Release, Mode::Marker, Mode::EverySource]
            .into_iter()
            .map(|mode| simulate(n, INTERVAL, mode, RELEASE, HORIZON, seed()))
            .collect();
        for r in &runs {
            println!("{}", r.line());
        }
        let [release, marker, every] = &runs[..] else {
            unreachable!()
        };
        // With a pointer or a marker every instance sees the release within one interval and
        // its jitter, at any size.
        for r in [release, marker] {
            let noticed = r.all_noticed.expect("every instance saw the release");
            assert!(
                noticed <= INTERVAL.mul_f64(1.1) + Duration::from_secs(1),
                "{r:?}"
            );
            assert!(r.s3_peak <= 5500, "{r:?}");
        }
        // Applying it is bounded by SSM's quota: at best every sync's calls at 40 a second.
        let applied = release.all_applied.expect("every instance applied it");
        assert!(applied + Duration::from_secs(1) >= floor(n), "{release:?}");
        // Without either, at this size SSM is held at its quota by the watch alone.
        if n >= 1000 {
            assert!(every.ssm_mean > 30.0, "{every:?}");
        }
    }
}
