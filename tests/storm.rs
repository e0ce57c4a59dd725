//! A fleet booting at once, and watching, against moto behind a throttling proxy: the short
//! version of `tests/bench/storm` (tests/bench/storm.py, which starts N `kicky-agent run` daemons
//! together, each with its own instance identity, and counts every AWS call at the proxy).

use crate::common;

use std::path::Path;
use std::process::Command;

use common::Rig;
use serde_json::Value;

/// Runs storm.py with `args`; its figures, as it wrote them.
fn storm(args: &[&str]) -> Value {
    let rig = Rig::get();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("storm.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bench/storm.py");
    let output = Command::new(&rig.python)
        .arg(script)
        .args([
            "--agent",
            env!("CARGO_BIN_EXE_kicky-agent"),
            "--bound",
            "180",
        ])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run storm.py");
    let (status, text) = common::status_and_text(&output);
    assert_eq!(status, 0, "storm.py {args:?}:\n{text}");
    println!("storm.py {args:?}:\n{text}");
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer)
        .and_then(|n| n.as_f64())
        .unwrap_or_else(|| panic!("{pointer} missing in {v:#}")) as i64
}

/// Unthrottled, each agent of the seed config costs 2 SSM calls (one GetParameters for both
/// names, one GetParametersByPath) and one S3 GET per file; every one converges with exactly the
/// seeded env and files. Then, watching a release marker every 5 s (`watch.interval`'s floor),
/// the quiet fleet asks SSM nothing (only the marker's HEAD, once an interval), and a change
/// reaches every agent.
#[test]
fn a_fleet_booting_at_once_costs_2_ssm_calls_an_agent_and_its_watch_only_the_marker() {
    let agents = 24;
    let interval = 5;
    let r = storm(&[
        "--agents",
        &agents.to_string(),
        "--rate",
        "ssm=0",
        "--watch",
        "--watch-interval",
        &interval.to_string(),
    ]);
    assert_eq!(int(&r, "/boot/converged"), agents, "{r:#}");
    assert_eq!(int(&r, "/boot/calls_per_agent/ssm/min"), 2, "{r:#}");
    assert_eq!(int(&r, "/boot/calls_per_agent/ssm/max"), 2, "{r:#}");
    assert_eq!(int(&r, "/boot/calls_per_agent/s3/max"), 2, "{r:#}");
    assert_eq!(int(&r, "/logs_with_a_secret"), 0, "{r:#}");

    let quiet = &r["watch"]["quiet_calls_per_s"];
    assert!(
        quiet.get("ssm").is_none(),
        "SSM asked while nothing changed: {r:#}"
    );
    let heads = quiet["s3"].as_f64().unwrap();
    // One HEAD of the marker per agent per interval (±10% jitter), give or take the window's
    // edges (storm.py measures over three intervals: about three HEADs an agent).
    let expected = agents as f64 / interval as f64;
    assert!((expected * 0.7..expected * 1.3).contains(&heads), "{r:#}");
    assert_eq!(int(&r, "/watch/applied"), agents, "{r:#}");
}

/// At 4 SSM calls a second for 24 agents (48 calls), most are throttled at first: every agent
/// still converges, and the retries after a throttling answer are spread by jitter, not a wave.
#[test]
fn a_throttled_fleet_converges_with_retries_spread_out() {
    let agents = 24;
    let r = storm(&["--agents", &agents.to_string(), "--rate", "ssm=4"]);
    assert_eq!(int(&r, "/boot/converged"), agents, "{r:#}");
    let retries = int(&r, "/boot/retry_spread/retries");
    assert!(int(&r, "/boot/throttled/ssm") > 0 && retries > 0, "{r:#}");
    assert!(spread_out(&r), "the retries came in a wave: {r:#}");
    assert_eq!(int(&r, "/logs_with_a_secret"), 0, "{r:#}");
}

/// Whether a boot's retries after a throttling answer were spread out: no 100 ms holds a third
/// of them or more (a synchronized wave starts nearly all at one instant). The spread of their
/// delays (`delay_cv`) is printed, not judged: backoff's doubling alone spreads delays without any
/// jitter (0.33 for two levels, see below).
fn spread_out(r: &Value) -> bool {
    let retries = int(r, "/boot/retry_spread/retries");
    retries > 0 && int(r, "/boot/retry_spread/busiest_100ms") * 3 < retries
}

/// The bound above fails a boot whose retries have no jitter and passes one whose retries have
/// full jitter (made-up traces of 24 agents throttled twice, `storm.py --synthetic`): the storm
/// test could fail if the retries lost their jitter.
#[test]
fn the_spread_bound_fails_retries_without_jitter() {
    let rig = Rig::get();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bench/storm.py");
    let trace = |jitter: &str| -> Value {
        let out = Command::new(&rig.python)
            .arg(&script)
            .args(["--agents", "24", "--synthetic", jitter])
            .output()
            .expect("storm.py");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let none = trace("none");
    assert!(!spread_out(&none), "{none:#}");
    let jittered = trace("jitter");
    assert!(spread_out(&jittered), "{jittered:#}");
}
