"""The scale bench's runs (tests/bench/scale starts the rig and builds the agent): one project of
N services of the rig's web image, brought up by kicky-agent and by docker compose v2 in turn."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import boto3

PROJECT = "kscale"
HEALTH = '["CMD", "/bin/wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/health"]'


def docker(*args: str, check: bool = True) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)}: {out.stderr}")
    return out.stdout


def remove_project() -> None:
    label = f"label=com.docker.compose.project={PROJECT}"
    ids = docker("ps", "-aq", "--filter", label).split()
    if ids:
        docker("rm", "-f", *ids)
    for net in docker("network", "ls", "-q", "--filter", label).split():
        docker("network", "rm", net, check=False)


def compose_file(image: str, services: int) -> str:
    lines = ["services:"]
    for i in range(services):
        lines += [
            f"  s{i:02d}:",
            f"    image: {image}",
            "    healthcheck:",
            f"      test: {HEALTH}",
            "      interval: 1s",
            "      timeout: 2s",
            "      retries: 5",
        ]
    return "\n".join(lines) + "\n"


def engine_split(since: float, until: float) -> dict[str, float] | None:
    """Where the engine's time went between two times, in seconds: from the run's start to the
    first container create (the side's own work before it), the creates, the starts (last create
    to last start: the engine completes them one after another), and the health checks (last
    start to last healthy: the first check runs one interval after a start)."""
    out = docker(
        "events", "--since", f"{since:.6f}", "--until", f"{until:.6f}", "--filter", "type=container",
        "--filter", f"label=com.docker.compose.project={PROJECT}", "--format", "{{.TimeNano}} {{.Action}}",
    )
    at = lambda action: [int(line.split()[0]) / 1e9 for line in out.splitlines() if line.split()[1:2] == [action]]
    created, started = at("create"), at("start")
    healthy = [int(line.split()[0]) / 1e9 for line in out.splitlines() if "health_status: healthy" in line]
    if not created or not started or not healthy:
        return None
    return {
        "before": min(created) - since,
        "creates": max(created) - min(created),
        "starts": max(started) - max(created),
        "health": max(healthy) - max(started),
        "engine": max(healthy) - min(created),
    }


def timed(cmds: list[list[str]], env: dict[str, str], cwd: Path) -> tuple[float, tuple[float, float] | None]:
    start = time.time()
    for cmd in cmds:
        out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}{out.stderr}")
    end = time.time()
    return end - start, engine_split(start, end + 0.001)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", required=True)
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    registry, region, moto = os.environ["KICKY_RIG_REGISTRY"], os.environ["KICKY_RIG_REGION"], os.environ["KICKY_RIG_MOTO_URL"]
    compose = os.environ["KICKY_RIG_COMPOSE_V2"]
    # The docker CLI (pulls between runs) and compose log in to the rig's registry.
    os.environ["DOCKER_CONFIG"] = str(Path(os.environ["KICKY_RIG_DIR"]) / "docker-config")
    image = f"{registry}/tester/web:1"
    work = Path(tempfile.mkdtemp(prefix="kicky-scale-"))
    (work / "docker-compose.yml").write_text(compose_file(image, args.services))
    ssm = boto3.client("ssm", endpoint_url=moto, region_name=region,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    ssm.put_parameter(Name="/bench-scale/registry", Value=os.environ["KICKY_RIG_REGISTRY_PASSWORD"],
                      Type="SecureString", Overwrite=True)
    (work / "agent.yaml").write_text(
        f"project: {PROJECT}\nworkdir: {work}\nstate_dir: {work}/state\n"
        f"aws: {{endpoint_url: \"{moto}\"}}\n"
        "compose: {file: docker-compose.yml, pull: missing, prune: false, healthy_timeout: 3m}\n"
        f"registries:\n  - {{server: \"{registry}\", username: tester, password: {{parameter: /bench-scale/registry}}}}\n"
    )
    agent_env = {"PATH": os.environ["PATH"], "HOME": str(work), "AWS_EC2_METADATA_DISABLED": "true",
                 "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": region}
    compose_env = {"PATH": os.environ["PATH"], "HOME": str(work),
                   "DOCKER_CONFIG": str(Path(os.environ["KICKY_RIG_DIR"]) / "docker-config")}
    sides = {
        "agent": ([[args.agent, "--config", str(work / "agent.yaml"), "sync"]], agent_env),
        "compose v2": ([[compose, "-p", PROJECT, "pull", "-q"], [compose, "-p", PROJECT, "up", "-d", "--wait"]], compose_env),
    }
    noop_cmds = {
        "agent": sides["agent"][0],
        "compose v2": [[compose, "-p", PROJECT, "up", "-d", "--wait"]],
    }
    figures: dict[str, dict[str, list[float]]] = {k: {s: [] for s in sides} for k in ("cold", "warm", "noop")}
    engine: dict[str, dict[str, list[dict]]] = {k: {s: [] for s in sides} for k in ("cold", "warm")}
    try:
        docker("pull", "-q", image)
        for i in range(args.runs):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for kind in ("cold", "warm"):
                for side in order:
                    remove_project()
                    if kind == "cold":
                        docker("rmi", image, check=False)
                    else:
                        docker("pull", "-q", image)
                    cmds, env = sides[side]
                    t, split = timed(cmds, env, work)
                    figures[kind][side].append(t)
                    if split:
                        engine[kind][side].append(split)
                    if kind == "warm":
                        # No-op: the same side again on what it converged, three times (the
                        # engine answers slower while it runs the twenty health checks).
                        for _ in range(3):
                            t, _ = timed(noop_cmds[side], env, work)
                            figures["noop"][side].append(t)
            print(f"scale: run {i + 1}: " + "; ".join(
                f"{kind} {side} {figures[kind][side][-1]:.2f} s" for kind in figures for side in sides), flush=True)
    finally:
        remove_project()
        docker("pull", "-q", image, check=False)

    med = {k: {s: statistics.median(v) for s, v in d.items()} for k, d in figures.items()}
    phases = ("before", "creates", "starts", "health", "engine")
    eng = {k: {s: {p: statistics.median(x[p] for x in v) if v else float("nan") for p in phases}
               for s, v in d.items()} for k, d in engine.items()}
    print(f"kicky-agent at scale: {args.services} services of one image with a 1 s healthcheck, "
          f"{os.cpu_count()} cores; medians of {args.runs} runs, the sides alternating")
    print(f"  {'':30} {'compose v2':>11} {'agent':>9} {'ratio':>7}   target")
    for kind, target in (("cold", 0.8), ("warm", None)):
        r = med[kind]["agent"] / med[kind]["compose v2"]
        goal = f"agent <= {target}x compose v2: {'met' if r <= target else 'MISSED'}" if target else ""
        print(f"  {kind + ', to all healthy':30} {med[kind]['compose v2']:9.2f} s {med[kind]['agent']:7.2f} s {r:7.2f}   {goal}")
    n = med["noop"]
    print(f"  {'no-op (all converged)':30} {n['compose v2']:9.2f} s {n['agent']:7.2f} s {n['agent'] / n['compose v2']:7.2f}   "
          f"agent <= 0.1 s: {'met' if n['agent'] <= 0.1 else 'MISSED'}")
    print("  diagnostic, where the time went at the engine's events (medians):")
    for kind in ("cold", "warm"):
        for phase, what in (("before", "start to first create"), ("creates", "the creates"),
                            ("starts", "last create to last start"), ("health", "last start to all healthy"),
                            ("engine", "first create to all healthy")):
            e = eng[kind]
            print(f"  {kind + ': ' + what:30} {e['compose v2'][phase]:9.2f} s {e['agent'][phase]:7.2f} s")
    print("  runs (s): " + json.dumps({k: {s: [round(x, 2) for x in v] for s, v in d.items()} for k, d in figures.items()}))


if __name__ == "__main__":
    main()
