#!/usr/bin/env python3
"""A release rolled out in waves to a fleet of agents, and the fleet view (issue 22, items 1 and 2).

Starts N `kicky-agent run` daemons as tests/bench/storm.py does (each with its own instance metadata,
whose role credentials STS issued for a session named after the instance, as EC2 does), and gives
each one a Docker Engine of its own (a `dockerd` on a unix socket of its own, with its own data root
and address pool: one instance, one engine), so that every agent runs the same project as a real
fleet does. The config is the seed's shape with releases on: `release.store`, `watch.apply: report`
(a promote alone never moves the fleet), the env file from a SecureString, the compose file from a
versioned bucket, the rig's registry with a password from SSM.

Then what an operator does:
1. `release create` and `release promote` the first release; the fleet boots into it.
2. Moves a parameter, the compose file (a new image, and a health check that fails on a node
   marked broken) and creates a second release, not promoted.
3. A wave: the SSM document's command, `kicky-agent resync --timeout T --release ID`, on W agents
   at once (as Run Command with --max-concurrency W would), one of them the broken node.
4. Waits two watch intervals, promotes the second release, waits two more: the agents outside the
   wave must not move.
5. `release status --json`: the fleet view.
6. Boots one more agent: a new instance applies the promoted release.

It prints and writes (--json) the facts, never a value; the test (tests/waves.rs) asserts them.
Every daemon and engine is stopped by its PID; every server listens on 127.0.0.1 or a unix socket.

    waves.py --agent target/debug/kicky-agent [--agents 20] [--wave 4] [--json FILE]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

import boto3  # noqa: E402

import storm  # noqa: E402
from storm import Agent, FleetImds, env_of, instance_id  # noqa: E402

WATCH_S = 5
PROJECT = "waves"


class Engine:
    """A Docker Engine of one instance's own: its own data root, exec root, unix socket and address
    pool, no iptables rules and no default bridge. Stopped (with its containers) by its PID."""

    def __init__(self, i: int, root: Path, driver: str) -> None:
        self.root = root
        root.mkdir(parents=True)
        (root / "daemon.json").write_text(json.dumps({"data-root": str(root / "data"), "storage-driver": driver}))
        self.socket = root / "d.sock"
        self.log = open(root / "dockerd.log", "wb")
        self.process = subprocess.Popen(
            [
                "dockerd",
                "--config-file", str(root / "daemon.json"),
                "--exec-root", str(root / "x"),
                "--pidfile", str(root / "d.pid"),
                "-H", f"unix://{self.socket}",
                "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
                "--default-address-pool", f"base=10.{200 + i}.0.0/16,size=24",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def api(self, method: str, path: str) -> tuple[int, bytes]:
        conn = UnixHTTPConnection(str(self.socket))
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def wait(self, bound: float) -> None:
        started = time.monotonic()
        while time.monotonic() - started < bound:
            if self.process.poll() is not None:
                raise SystemExit(f"waves: dockerd exited with {self.process.returncode}: {self.root}/dockerd.log")
            try:
                if self.api("GET", "/_ping")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"waves: dockerd did not answer in {bound} s: {self.root}/dockerd.log")

    def containers(self) -> dict[str, dict]:
        """The project's containers: service → id, start time, image, health."""
        filters = json.dumps({"label": [f"com.docker.compose.project={PROJECT}"]})
        status, body = self.api("GET", "/containers/json?all=1&filters=" + urlquote(filters))
        assert status == 200, body
        out = {}
        for c in json.loads(body):
            status, body = self.api("GET", f"/containers/{c['Id']}/json")
            assert status == 200, body
            inspect = json.loads(body)
            service = inspect["Config"]["Labels"].get("com.docker.compose.service", "?")
            out[service] = {
                "id": inspect["Id"],
                "started": inspect["State"]["StartedAt"],
                "running": inspect["State"]["Running"],
                "image": inspect["Config"]["Image"],
                "health": (inspect["State"].get("Health") or {}).get("Status"),
            }
        return out

    def stop(self) -> None:
        if self.process.poll() is None:
            # The application's containers first (the agent leaves them running), then the engine.
            try:
                for c in self.containers().values():
                    self.api("DELETE", f"/containers/{c['id']}?force=1")
            except (OSError, AssertionError):
                pass
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


def urlquote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def document_command(template: Path, parameters: dict[str, str]) -> str:
    """The resync document's command line, as Run Command runs it with `parameters`."""
    for line in template.read_text().splitlines():
        line = line.strip()
        if line.startswith('- "kicky-agent resync'):
            command = json.loads(line[2:])
            for name, value in parameters.items():
                command = command.replace("{{ %s }}" % name, value)
            assert "{{" not in command, command
            return command
    raise SystemExit(f"waves: no resync command in {template}")


def compose(registry: str, version: int) -> bytes:
    """The fleet's compose file: the rig's web image, its health endpoint checked with a timeout a
    loaded 2-core machine running 20 engines meets; the second release also checks the node is not
    marked broken (a file the test puts in one instance's ./health)."""
    broken = "test ! -e /health/broken && " if version == 2 else ""
    return (
        "services:\n  web:\n"
        f"    image: {registry}/tester/web:{version}\n"
        "    environment:\n      GREETING: ${GREETING}\n"
        "    volumes:\n      - ./health:/health:ro\n"
        "    healthcheck:\n"
        f"      test: [\"CMD\", \"sh\", \"-c\", \"{broken}wget -q -O /dev/null http://127.0.0.1:8080/health\"]\n"
        "      interval: 1s\n      timeout: 5s\n      retries: 3\n"
    ).encode()


def config(me: Path, moto_url: str, prefix: str, bucket: str, registry: str) -> str:
    return (
        f"project: {PROJECT}\nworkdir: {me}/srv\nstate_dir: {me}/state\ncontrol_socket: {me}/run/control.sock\n"
        f"aws:\n  endpoint_url: {moto_url}\n  s3_force_path_style: true\n"
        f"env:\n  file: .env\n  parameters:\n    - name: {prefix}/env\n      format: dotenv\n"
        f"files:\n  - source: s3://{bucket}/docker-compose.yml\n    path: docker-compose.yml\n    mode: \"0644\"\n"
        "compose:\n  file: docker-compose.yml\n  pull: missing\n  healthy_timeout: 60s\n"
        f"registries:\n  - server: {registry}\n    username: tester\n    password: {{ parameter: {prefix}/registry }}\n"
        f"release:\n  store: s3://{bucket}/fleet-store/\n"
        f"watch:\n  interval: {WATCH_S}s\n  apply: report\n"
        "lifecycle:\n  hook: off\n"
    )


class Operator:
    """`kicky-agent release ...` as an operator runs it: the fleet's config, the operator's own
    credentials, no instance metadata, the machine's Docker Engine (to ask registries for digests)."""

    def __init__(self, binary: str, work: Path, text: str, region: str) -> None:
        self.binary = binary
        (work / "operator").mkdir()
        self.config = work / "operator" / "agent.yaml"
        self.config.write_text(text)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.binary, "--config", str(self.config), *args],
            env=self.env, capture_output=True, text=True, timeout=300,
        )

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        if done.returncode != 0:
            raise SystemExit(f"waves: {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        return done.stdout


def spawn(agent: Agent, binary: str, imds_url: str, engine: Engine) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(agent.dir),
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds_url,
        "NOTIFY_SOCKET": str(agent.notify_path),
        "DOCKER_HOST": engine.host,
    }
    log = open(agent.dir / "daemon.log", "wb")
    agent.process = subprocess.Popen(
        [binary, "--config", str(agent.dir / "etc" / "agent.yaml"), "run"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
    )
    log.close()


def status(binary: str, agent: Agent) -> dict:
    done = subprocess.run(
        [binary, "--config", str(agent.dir / "etc" / "agent.yaml"), "status", "--json"],
        env={"PATH": os.environ.get("PATH", ""), "AWS_EC2_METADATA_DISABLED": "true"},
        capture_output=True, text=True, timeout=60,
    )
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return {}


def snapshot(binary: str, agents: list[Agent], engines: list[Engine]) -> list[dict]:
    """What each instance runs: its release, its containers, its env file's GREETING (compared,
    never printed)."""
    out = []
    for agent, engine in zip(agents, engines):
        try:
            greeting = env_of(agent.env_file()).get("GREETING")
        except OSError:
            greeting = None
        out.append({
            "release": status(binary, agent).get("release"),
            "containers": engine.containers(),
            "greeting": greeting,
        })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", required=True, help="the kicky-agent binary")
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--wave", type=int, default=4, help="instances in the wave")
    parser.add_argument("--broken", type=int, default=2, help="the wave's instance whose health check fails")
    parser.add_argument("--bound", type=float, default=240)
    parser.add_argument("--json", help="write the facts here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()

    moto_url = os.environ["KICKY_RIG_MOTO_URL"]
    region = os.environ["KICKY_RIG_REGION"]
    registry = os.environ["KICKY_RIG_REGISTRY"]
    password = os.environ["KICKY_RIG_REGISTRY_PASSWORD"]
    moto = storm.imds.loopback_target(moto_url)
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region)
    ssm, s3, sts = (session.client(s, endpoint_url=moto_url) for s in ("ssm", "s3", "sts"))

    tag = f"{os.getpid()}-{secrets.token_hex(3)}"
    prefix, bucket = f"/waves-{tag}", f"kicky-waves-{tag}"
    one, two = f"one-{secrets.token_hex(6)}", f"two-{secrets.token_hex(6)}"
    ssm.put_parameter(Name=f"{prefix}/env", Type="SecureString", Value=f"GREETING={one}\n", Overwrite=True)
    ssm.put_parameter(Name=f"{prefix}/registry", Type="SecureString", Value=password, Overwrite=True)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="docker-compose.yml", Body=compose(registry, 1))

    total = args.agents + 1  # the last one boots after the promote
    # Role credentials as EC2 gets them: a session of the instance role named after the instance.
    role = "arn:aws:iam::123456789012:role/kicky-waves"
    credentials = [
        sts.assume_role(RoleArn=role, RoleSessionName=instance_id(i))["Credentials"] for i in range(total)
    ]
    driver = subprocess.run(
        ["docker", "info", "-f", "{{.Driver}}"], capture_output=True, text=True, check=True
    ).stdout.strip()

    # Short paths: a unix socket's path is at most 107 bytes.
    work = Path(tempfile.mkdtemp(prefix="kw.", dir="/tmp"))
    engines: list[Engine] = []
    agents: list[Agent] = []
    fleet = None
    facts: dict = {"agents": args.agents, "wave": args.wave, "broken": instance_id(args.broken)}
    try:
        fleet = FleetImds(moto, total, work / "imds", credentials)
        operator = Operator(args.agent, work, config(work / "op", moto_url, prefix, bucket, registry), region)
        first = operator.ok("release", "create", "--note", "first").strip()
        operator.ok("release", "promote", first)

        for i in range(total):
            engines.append(Engine(i, work / f"e{i}", driver))
            agent = Agent(i, work)
            (agent.dir / "srv" / "health").mkdir(parents=True)
            # Not above the workdir: the agent refuses a bind mount below its own config.
            (agent.dir / "etc").mkdir()
            (agent.dir / "etc" / "agent.yaml").write_text(config(agent.dir, moto_url, prefix, bucket, registry))
            agents.append(agent)
        for engine in engines:
            engine.wait(60)
        booting, late = agents[: args.agents], agents[args.agents]
        started = time.monotonic()
        for agent in booting:
            spawn(agent, args.agent, fleet.urls[agent.i], engines[agent.i])
        storm.wait_ready(booting, started, args.bound)
        facts["booted"] = sum(1 for a in booting if a.ready_at is not None)
        facts["boot_s"] = round(time.monotonic() - started, 1)
        before = snapshot(args.agent, booting, engines)
        facts["first"] = first
        facts["on_first"] = sum(1 for s in before if s["release"] == first and s["greeting"] == one)

        # Everything moves; a second release, not promoted.
        ssm.put_parameter(Name=f"{prefix}/env", Type="SecureString", Value=f"GREETING={two}\n", Overwrite=True)
        s3.put_object(Bucket=bucket, Key="docker-compose.yml", Body=compose(registry, 2))
        second = operator.ok("release", "create", "--note", "second").strip()
        facts["second"] = second
        (agents[args.broken].dir / "srv" / "health" / "broken").write_text("")

        # The wave: the SSM document's command (ami/cloudformation.yaml), its parameters filled in,
        # run by `sh` on each instance of the wave at once, as aws:runShellScript runs it.
        wave = booting[: args.wave]
        script = document_command(ROOT / "ami" / "cloudformation.yaml", {"timeout": "2min", "release": second})
        facts["document_command"] = script

        def command(a: Agent) -> subprocess.CompletedProcess:
            shim = a.dir / "bin"
            shim.mkdir(exist_ok=True)
            # The instance's `kicky-agent` reads /etc/kicky-agent/agent.yaml; this one, its own.
            (shim / "kicky-agent").write_text(
                f"#!/bin/sh\nexec {args.agent} --config {a.dir / 'etc' / 'agent.yaml'} \"$@\"\n"
            )
            (shim / "kicky-agent").chmod(0o755)
            return subprocess.run(
                ["sh", "-c", script],
                env={"PATH": f"{shim}:{os.environ.get('PATH', '')}", "AWS_EC2_METADATA_DISABLED": "true"},
                capture_output=True, text=True, timeout=300,
            )

        wave_started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(len(wave)) as pool:
            done = list(pool.map(command, wave))
        facts["wave_s"] = round(time.monotonic() - wave_started, 1)
        facts["invocations"] = {
            instance_id(a.i): {"status": d.returncode, "output": (d.stdout + d.stderr)[-600:]} for a, d in zip(wave, done)
        }
        after_wave = snapshot(args.agent, booting, engines)

        # Two watch intervals with nothing promoted, then the promote, then two more.
        time.sleep(2 * WATCH_S + 2)
        quiet = snapshot(args.agent, booting, engines)
        operator.ok("release", "promote", second)
        time.sleep(2 * WATCH_S + 2)
        promoted = snapshot(args.agent, booting, engines)
        facts["instances"] = {
            instance_id(a.i): {
                "before": before[a.i],
                "after_wave": after_wave[a.i],
                "quiet": quiet[a.i],
                "promoted": promoted[a.i],
                "greeting": {one: "first", two: "second"}.get(promoted[a.i]["greeting"] or "", "other"),
                "noticed_promote": "changed: " in a.log(),
            }
            for a in booting
        }
        for snap in (before, after_wave, quiet, promoted):
            for s in snap:
                s.pop("greeting", None)

        view = json.loads(operator.ok("release", "status", "--json"))
        facts["status_before_new"] = view

        # A new instance boots into the promoted release.
        new_started = time.monotonic()
        spawn(late, args.agent, fleet.urls[late.i], engines[late.i])
        storm.wait_ready([late], new_started, args.bound)
        new = snapshot(args.agent, [late], [engines[late.i]])[0]
        facts["new_instance"] = {
            "id": instance_id(late.i),
            "ready": late.ready_at is not None,
            "release": new["release"],
            "greeting": {one: "first", two: "second"}.get(new["greeting"] or "", "other"),
            "containers": new["containers"],
        }
        facts["status_after_new"] = json.loads(operator.ok("release", "status", "--json"))
        facts["status_text"] = operator.ok("release", "status")
        outputs = [f["output"] for f in facts["invocations"].values()] + [facts["status_text"]]
        facts["outputs_with_a_secret"] = sum(1 for text in outputs if one in text or two in text or password in text)
        facts["logs_with_a_secret"] = sum(
            1 for a in agents if any(v in a.log() for v in (one, two, password))
        )
    finally:
        storm.stop([a for a in agents if a.process])
        for a in agents:
            if a.process is None:
                a.notify.close()
        for engine in engines:
            engine.stop()
        if fleet:
            fleet.stop()
        if args.keep:
            print(f"waves: logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"{facts['booted']}/{args.agents} agents booted into the first release in {facts['boot_s']} s")
    for instance, inv in facts["invocations"].items():
        print(f"wave: {instance} resync --release exited {inv['status']}")
    print(f"wave took {facts['wave_s']} s")
    print(facts["status_text"], end="")
    n = facts["new_instance"]
    print(f"new instance {n['id']}: ready {n['ready']}, release {n['release']}")
    print(f"outputs holding a value: {facts['outputs_with_a_secret']}; daemon logs: {facts['logs_with_a_secret']}")
    if args.json:
        Path(args.json).write_text(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
