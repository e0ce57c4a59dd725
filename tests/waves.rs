//! A release rolled out in waves to 20 agents, and the fleet view: tests/bench/waves.py starts the
//! agents as tests/bench/storm does (each with its own instance metadata and STS session named
//! after the instance) and gives each a Docker Engine of its own, as each instance has. The wave
//! runs the resync document's own command line (ami/cloudformation.yaml) on 4 instances at once,
//! as Run Command with `--max-concurrency 4` does; one of them is a node whose health check fails.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::Rig;
use serde_json::Value;

fn ids(view: &Value, release: &str, standing: &str) -> BTreeSet<String> {
    let group = view["fleet"]["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["release"] == release)
        .unwrap_or_else(|| panic!("no group for {release}: {view:#}"));
    group["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["standing"] == standing)
        .map(|m| m["instance"].as_str().unwrap().to_string())
        .collect()
}

fn instance(i: usize) -> String {
    format!("i-0{i:016x}")
}

#[test]
fn a_wave_stops_at_its_failed_instance_moves_nothing_else_and_the_fleet_view_names_them() {
    let rig = Rig::get();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("waves.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bench/waves.py");
    let (agents, wave, broken) = (20, 4, 2);
    let output = Command::new(&rig.python)
        .arg(script)
        .args(["--agent", env!("CARGO_BIN_EXE_kicky-agent")])
        .args(["--agents", &agents.to_string(), "--wave", &wave.to_string()])
        .args(["--broken", &broken.to_string(), "--json"])
        .arg(&json)
        .output()
        .expect("run waves.py");
    let (status, text) = common::status_and_text(&output);
    println!("waves.py:\n{text}");
    assert_eq!(status, 0, "waves.py:\n{text}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let (first, second) = (r["first"].as_str().unwrap(), r["second"].as_str().unwrap());

    // The fleet booted into the promoted (first) release.
    assert_eq!(r["booted"], agents, "{r:#}");
    assert_eq!(r["on_first"], agents, "{r:#}");
    assert_eq!(
        r["document_command"],
        format!("kicky-agent resync --timeout 2min --release '{second}'")
    );

    // The wave's invocations: the broken node's fails (Run Command counts it: with
    // --max-errors 0 no further wave starts), the others succeed.
    for i in 0..wave {
        let invocation = &r["invocations"][instance(i)];
        let expected = if i == broken { 1 } else { 0 };
        assert_eq!(
            invocation["status"],
            expected,
            "{}: {invocation:#}",
            instance(i)
        );
    }
    for i in 0..agents {
        let at = &r["instances"][instance(i)];
        let web = |phase: &str| at[phase]["containers"]["web"].clone();
        if i < wave && i != broken {
            // On the second release: its values, its image by digest, healthy.
            assert_eq!(at["after_wave"]["release"], second, "{}", instance(i));
            assert_eq!(at["greeting"], "second", "{}", instance(i));
            assert_ne!(web("after_wave")["image"], web("before")["image"]);
            assert_eq!(web("promoted")["running"], true);
        } else {
            // The broken node rolled back (its container was never stopped: the new one was
            // started beside it), the rest never moved: the same container, started at
            // the same time, the first release's values, through the wave, two quiet watch
            // intervals, the promote (reported, not applied: `watch.apply: report`) and two more.
            for phase in ["after_wave", "quiet", "promoted"] {
                assert_eq!(at[phase]["release"], first, "{} {phase}", instance(i));
                assert_eq!(
                    web(phase)["id"],
                    web("before")["id"],
                    "{} {phase}",
                    instance(i)
                );
                assert_eq!(web(phase)["started"], web("before")["started"]);
                // Running; its health is the image's own check, which a loaded 2-core machine
                // running 20 engines may fail for a moment (1 s timeout): not the agent's doing.
                assert_eq!(web(phase)["running"], true, "{} {phase}", instance(i));
            }
            assert_eq!(at["greeting"], "first", "{}", instance(i));
            if i >= wave {
                assert_eq!(
                    at["noticed_promote"],
                    true,
                    "{}: saw the promote",
                    instance(i)
                );
            }
        }
    }

    // The fleet view, as `release status` reads the instances' own records.
    let view = &r["status_before_new"];
    assert_eq!(view["promoted"]["release"], second);
    let wave_ok: BTreeSet<String> = (0..wave).filter(|i| *i != broken).map(instance).collect();
    assert_eq!(ids(view, second, "healthy"), wave_ok, "{view:#}");
    assert_eq!(
        ids(view, second, "failed"),
        BTreeSet::from([instance(broken)])
    );
    let rest: BTreeSet<String> = (wave..agents).map(instance).collect();
    assert_eq!(ids(view, first, "drifting"), rest, "{view:#}");
    assert!(ids(view, first, "healthy").is_empty() && ids(view, first, "failed").is_empty());
    let failed = view["fleet"]["releases"][0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["standing"] == "failed")
        .unwrap();
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("unhealthy"), "{reason}");

    // A new instance boots into the promoted release, and reports it.
    let new = &r["new_instance"];
    assert_eq!(new["ready"], true, "{new:#}");
    assert_eq!(new["release"], second);
    assert_eq!(new["greeting"], "second");
    let mut healthy = wave_ok.clone();
    healthy.insert(instance(agents));
    assert_eq!(ids(&r["status_after_new"], second, "healthy"), healthy);
    let text = r["status_text"].as_str().unwrap();
    assert!(
        text.contains(&format!("release {second} (promoted): 4 healthy, 1 failed")),
        "{text}"
    );
    assert!(
        text.contains(&format!("release {first}: 16 drifting")),
        "{text}"
    );

    assert_eq!(r["outputs_with_a_secret"], 0);
    assert_eq!(r["logs_with_a_secret"], 0);
}
