#!/usr/bin/env python3
"""A fleet booting at once, then watching, against moto behind a throttling proxy (issue 15, items 4 and 5).

Starts N `kicky-agent run` daemons together, as an Auto Scaling group's scale-out does. Each has its
own instance identity (instance id, and an access key id of its own in its role credentials) from an
IMDSv2 layer of its own (tests/rig/imds.py's, on its own port), and the seed config (the env file from
a dotenv SecureString, a path of variables and a single secret; the compose and promtail files from
S3; lifecycle hook `auto`). The Docker part is off: the config has no `compose:` section. Every AWS
call goes through tests/rig/throttle.py, which counts calls per agent and answers throttling errors
above a set rate per service (default: SSM at 40 a second, its default GetParameters quota).

It reports, for the boot: how many agents converged (READY=1 on their own NOTIFY_SOCKET, the env file
and both files byte for byte as seeded), the time until all had, SSM, S3 and Auto Scaling calls per
agent (including the throttled ones), how many were throttled, and how the retries after a throttling
answer spread out in time (a synchronized wave would put them all in one instant).

With --watch, the daemons then watch a release marker (`watch.marker`, an S3 object) every
--watch-interval seconds. It measures the calls a second the fleet makes at the proxy while nothing
changes, then changes a parameter and the marker, and reports the time until every agent had
noticed (its log says so) and applied the change (its env file holds the new value).

    storm.py --agent target/release/kicky-agent --agents 200 [--rate ssm=40] [--watch] [--json FILE]

Needs the rig's environment (KICKY_RIG_MOTO_URL, KICKY_RIG_REGION; tests/rig/up.sh writes it) and
its Python (boto3, python-dotenv). Values are never printed: env files are compared, not shown.
Every daemon is stopped by its PID at the end; every server here listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import secrets
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests" / "rig"))

import boto3  # noqa: E402
from dotenv import dotenv_values  # noqa: E402

import imds  # noqa: E402
from throttle import ThrottlingProxy  # noqa: E402

SEED = ROOT / "tests" / "fixtures" / "seed-stack"
FILES = ("docker-compose.yml", "promtail-config.yml")
# The agent's floor for watch.interval (src/config/mod.rs, floors::WATCH_INTERVAL), in seconds.
WATCH_FLOOR_S = 5
# Test values in the shape of the seed stack's .env; none is a real secret, but they are treated as
# such: compared, never printed.
DOTENV = (
    "DOCKERHUB_USERNAME=127.0.0.1/tester\n"
    "LOKI_URL=http://127.0.0.1:3100\n"
    "SPRING_DATASOURCE_URL=jdbc:mysql://db.internal:3306/orange?useSSL=true\n"
    "SPRING_DATASOURCE_PASSWORD='p@ss\"w0rd $till secret'\n"
)


class FleetImds:
    """One IMDSv2 layer per agent, each on its own port, in this process: the rig's handler with
    a fixture of its own (instance id) and role credentials whose access key id names the agent.
    One thread accepts for all of them (a serving loop each would be a thousand threads polling)."""

    def __init__(
        self, moto: tuple[str, int], count: int, fixtures: Path, credentials: list[dict] | None = None
    ) -> None:
        """`credentials`: each agent's role credentials (AccessKeyId, SecretAccessKey,
        SessionToken), as STS issued them; by default a key of its own that names the agent."""
        self.servers = []
        self.urls = []
        self.selector = selectors.DefaultSelector()
        for i in range(count):
            fixture = fixtures / f"imds-{i}"
            fixture.mkdir(parents=True)
            (fixture / "instance-id").write_text(instance_id(i))
            handler = type(
                f"Imds{i}",
                (AgentImds,),
                {
                    "tokens": imds.Tokens(),
                    "fixture": imds.Fixture(fixture),
                    "moto": moto,
                    "credentials": credentials[i] if credentials else {
                        "AccessKeyId": access_key(i),
                        "SecretAccessKey": "storm-not-a-secret",
                        "SessionToken": "storm-token",
                    },
                },
            )
            server = imds.Server(("127.0.0.1", 0), handler)
            self.selector.register(server, selectors.EVENT_READ)
            self.servers.append(server)
            self.urls.append(f"http://127.0.0.1:{server.server_address[1]}")
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            for key, _ in self.selector.select(timeout=0.2):
                # What serve_forever does when its socket is readable: accept, and a thread
                # (ThreadingMixIn) for the connection.
                key.fileobj._handle_request_noblock()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()
        for server in self.servers:
            server.server_close()


class AgentImds(imds.Handler):
    credentials: dict

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def handle(self) -> None:
        # An agent that gave up waiting (the SDK's 1 s metadata timeout) has closed its end.
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _local(self, path: str) -> tuple[int, bytes] | None:
        meta = path.removeprefix("/latest/meta-data/")
        for prefix in ("iam/security-credentials/", "iam/security-credentials-extended/"):
            if meta.startswith(prefix):
                role = meta.removeprefix(prefix)
                if not role:
                    return 200, b"kicky-storm"
                if role != "kicky-storm":
                    return 404, b"Not Found"
                expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 6 * 3600))
                doc = {
                    "Code": "Success",
                    "LastUpdated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "Type": "AWS-HMAC",
                    "AccessKeyId": self.credentials["AccessKeyId"],
                    "SecretAccessKey": self.credentials["SecretAccessKey"],
                    "Token": self.credentials["SessionToken"],
                    "Expiration": expires,
                }
                return 200, json.dumps(doc).encode()
        return super()._local(path)


def instance_id(i: int) -> str:
    return f"i-0{i:016x}"


def access_key(i: int) -> str:
    return f"ASIASTORM{i:07d}"


def config(i: int, work: Path, proxy: str, prefix: str, bucket: str, watch: float | None) -> str:
    me = work / f"agent-{i}"
    watch_lines = (
        f"watch:\n  interval: {watch}s\n  marker: s3://{bucket}/release\n" if watch else "watch:\n  interval: 0\n"
    )
    return (
        f"project: storm\nworkdir: {me}/srv\nstate_dir: {me}/state\ncontrol_socket: {me}/control.sock\n"
        f"aws:\n  endpoint_url: {proxy}\n  s3_force_path_style: true\n"
        "env:\n  file: .env\n  parameters:\n"
        f"    - name: {prefix}/prod/env\n      format: dotenv\n"
        f"    - path: {prefix}/prod/vars/\n      recursive: true\n"
        f"    - name: {prefix}/prod/SERVER_SECRET\n      key: SERVER_SECRET\n"
        "files:\n"
        f"  - source: s3://{bucket}/docker-compose.yml\n    path: app/docker-compose.yml\n"
        f"  - source: s3://{bucket}/promtail-config.yml\n    path: app/promtail-config.yml\n    mode: \"0644\"\n"
        "lifecycle:\n  hook: auto\n" + watch_lines
    )


class Agent:
    def __init__(self, i: int, work: Path) -> None:
        self.i = i
        self.dir = work / f"agent-{i}"
        self.dir.mkdir(parents=True)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify_path = self.dir / "notify.sock"
        self.notify.bind(str(self.notify_path))
        self.notify.setblocking(False)
        self.ready_at: float | None = None
        self.process: subprocess.Popen | None = None

    def env_file(self) -> Path:
        return self.dir / "srv" / ".env"

    def log(self) -> str:
        try:
            return (self.dir / "daemon.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""


def seed(region: str, moto_url: str, prefix: str, bucket: str) -> dict[str, str]:
    """Parameters and objects as the seed stack's operators keep them; the env the agents should write."""
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region)
    ssm = session.client("ssm", endpoint_url=moto_url)
    s3 = session.client("s3", endpoint_url=moto_url)
    server_secret = f"storm {secrets.token_hex(8)}"
    ssm.put_parameter(Name=f"{prefix}/prod/env", Type="SecureString", Value=DOTENV, Overwrite=True)
    ssm.put_parameter(Name=f"{prefix}/prod/vars/TZ", Type="String", Value="Asia/Seoul", Overwrite=True)
    ssm.put_parameter(Name=f"{prefix}/prod/SERVER_SECRET", Type="SecureString", Value=server_secret, Overwrite=True)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    for name in FILES:
        s3.put_object(Bucket=bucket, Key=name, Body=(SEED / name).read_bytes())
    s3.put_object(Bucket=bucket, Key="release", Body=b"r1\n")
    expected = env_of(DOTENV)
    expected.update({"TZ": "Asia/Seoul", "SERVER_SECRET": server_secret})
    return expected


def env_of(source: Path | str) -> dict[str, str]:
    """The variables of an env file (a path) or of dotenv text (a string), as python-dotenv reads them."""
    values = dotenv_values(source) if isinstance(source, Path) else dotenv_values(stream=io.StringIO(source))
    return {k: v or "" for k, v in values.items()}


def converged(agent: Agent, expected: dict[str, str]) -> bool:
    if agent.ready_at is None:
        return False
    try:
        env = env_of(agent.env_file())
    except OSError:
        return False
    if env != expected:
        return False
    return all((agent.dir / "srv" / "app" / name).read_bytes() == (SEED / name).read_bytes() for name in FILES)


def spawn(agent: Agent, binary: str, imds_url: str) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(agent.dir),
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds_url,
        "NOTIFY_SOCKET": str(agent.notify_path),
    }
    log = open(agent.dir / "daemon.log", "wb")
    agent.process = subprocess.Popen(
        [binary, "--config", str(agent.dir / "agent.yaml"), "run"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,
    )
    log.close()


def wait_ready(agents: list[Agent], started: float, bound: float) -> None:
    selector = selectors.DefaultSelector()
    for agent in agents:
        selector.register(agent.notify, selectors.EVENT_READ, agent)
    waiting = len(agents)
    while waiting and time.monotonic() - started < bound:
        for key, _ in selector.select(timeout=0.5):
            agent = key.data
            try:
                message = agent.notify.recv(4096).decode(errors="replace")
            except BlockingIOError:
                continue
            if "READY=1" in message.split("\n") and agent.ready_at is None:
                agent.ready_at = time.monotonic() - started
                waiting -= 1
        for agent in agents:
            if agent.ready_at is None and agent.process.poll() is not None:
                raise SystemExit(f"storm: agent {agent.i} exited with {agent.process.returncode}: {agent.dir}/daemon.log")
    selector.close()


def stop(agents: list[Agent]) -> None:
    for agent in agents:
        if agent.process and agent.process.poll() is None:
            agent.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for agent in agents:
        if agent.process is None:
            continue
        try:
            agent.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            agent.process.kill()
            agent.process.wait()
        agent.notify.close()


def spread(delays: list[float], window: float = 0.1) -> dict:
    """How the retries after a throttling answer spread: their delays, and the most that started
    within any one `window` of each other (a synchronized wave: nearly all)."""
    if not delays:
        return {"retries": 0}
    return {
        "retries": len(delays),
        "delay_min_s": round(min(delays), 3),
        "delay_median_s": round(statistics.median(delays), 3),
        "delay_max_s": round(max(delays), 3),
        "delay_cv": round(statistics.pstdev(delays) / statistics.mean(delays), 2) if statistics.mean(delays) else 0,
    }


def busiest_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] > window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def per_agent(calls, agents: int, service: str) -> dict:
    counts = Counter(c.agent for c in calls if c.service == service)
    values = [counts.get(access_key(i), 0) for i in range(agents)]
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "total": sum(values)}


def peak_per_second(times: list[float]) -> int:
    return busiest_window(times, 1.0)


def boot_report(calls, agents: list[Agent]) -> dict:
    # A retry is the next call of the same action by the same agent after a throttled answer: an
    # agent's other calls (its GetParametersByPath beside its GetParameters) are not retries.
    by_agent = defaultdict(list)
    for c in sorted(calls, key=lambda c: c.at):
        by_agent[(c.agent, c.service, c.action)].append(c)
    delays, retry_times = [], []
    for seq in by_agent.values():
        for prev, nxt in zip(seq, seq[1:]):
            if prev.throttled:
                delays.append(nxt.at - prev.at)
                retry_times.append(nxt.at)
    throttled = Counter(c.service for c in calls if c.throttled)
    ready = [a.ready_at for a in agents if a.ready_at is not None]
    return {
        "agents": len(agents),
        "ready": len(ready),
        "all_ready_s": round(max(ready), 2) if len(ready) == len(agents) else None,
        "median_ready_s": round(statistics.median(ready), 2) if ready else None,
        "calls_per_agent": {s: per_agent(calls, len(agents), s) for s in ("ssm", "s3", "autoscaling")},
        "throttled": dict(throttled),
        # Anything else that was not a success, by service and status (moto's own errors, say).
        "failed_answers": dict(Counter(f"{c.service} {c.status}" for c in calls if not c.throttled and c.status >= 400)),
        "ssm_actions": dict(Counter(c.action for c in calls if c.service == "ssm" and not c.throttled)),
        "retry_spread": spread(delays) | {"busiest_100ms": busiest_window(retry_times, 0.1)},
        "ssm_peak_per_s": {
            "asked": peak_per_second([c.at for c in calls if c.service == "ssm"]),
            "answered": peak_per_second([c.at for c in calls if c.service == "ssm" and not c.throttled]),
        },
    }


def rates(calls, start: float, end: float) -> dict:
    span = max(end - start, 1e-9)
    counts = Counter(c.service for c in calls if start <= c.at < end)
    return {s: round(n / span, 2) for s, n in sorted(counts.items())}


def watch_phase(args, agents, proxy, region, moto_url, prefix, bucket, expected) -> dict:
    # The first watch after a start looks at every source; let it pass, then measure the quiet.
    time.sleep(args.watch_interval * 2.5)
    quiet_from = proxy.ledger.now()
    time.sleep(args.watch_interval * 3)
    quiet_to = proxy.ledger.now()
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region)
    new_secret = f"storm {secrets.token_hex(8)}"
    session.client("ssm", endpoint_url=moto_url).put_parameter(
        Name=f"{prefix}/prod/SERVER_SECRET", Type="SecureString", Value=new_secret, Overwrite=True
    )
    session.client("s3", endpoint_url=moto_url).put_object(Bucket=bucket, Key="release", Body=b"r2\n")
    changed_at = proxy.ledger.now()
    noticed: dict[int, float] = {}
    applied: dict[int, float] = {}
    want = dict(expected, SERVER_SECRET=new_secret)
    while len(applied) < len(agents) and proxy.ledger.now() - changed_at < args.bound:
        for agent in agents:
            if agent.i not in noticed and "changed:" in agent.log():
                noticed[agent.i] = proxy.ledger.now() - changed_at
            if agent.i not in applied:
                try:
                    env = env_of(agent.env_file())
                except OSError:
                    continue
                if env == want:
                    applied[agent.i] = proxy.ledger.now() - changed_at
                    noticed.setdefault(agent.i, applied[agent.i])
        time.sleep(0.2)
    calls = proxy.ledger.snapshot()
    return {
        "interval_s": args.watch_interval,
        "quiet_calls_per_s": rates(calls, quiet_from, quiet_to),
        "after_change_calls_per_s": rates(calls, changed_at, proxy.ledger.now()),
        "noticed": len(noticed),
        "all_noticed_s": round(max(noticed.values()), 2) if len(noticed) == len(agents) else None,
        "applied": len(applied),
        "all_applied_s": round(max(applied.values()), 2) if len(applied) == len(agents) else None,
        "median_applied_s": round(statistics.median(applied.values()), 2) if applied else None,
        "throttled_after_change": dict(Counter(c.service for c in calls if c.throttled and c.at >= changed_at)),
    }


def rss_mb(agents: list[Agent]) -> dict:
    """The daemons' resident memory now (VmRSS), in MB."""
    sizes = []
    for agent in agents:
        try:
            status = Path(f"/proc/{agent.process.pid}/status").read_text()
        except OSError:
            continue
        kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None)
        if kb is not None:
            sizes.append(kb / 1024)
    if not sizes:
        return {}
    return {"median": round(statistics.median(sizes), 1), "max": round(max(sizes), 1), "total": round(sum(sizes))}


def leaked(agents: list[Agent], values: list[str]) -> int:
    return sum(1 for a in agents if any(v in a.log() for v in values))


def synthetic_boot(agents: int, jitter: bool, seed: int = 7) -> dict:
    """The retry spread of a made-up boot, no agent run: `agents` booting within 50 ms, every
    first call throttled and every second one too, each retry after the standard retry mode's
    backoff (1 s, then 2 s), drawn in full (`jitter`) or not at all. What the storm test's bound
    says of each: it must fail the trace without jitter (tests/storm.rs)."""
    rng = random.Random(seed)
    delays, retry_times = [], []
    for i in range(agents):
        at = rng.uniform(0, 0.05)
        for backoff in (1.0, 2.0):
            delay = backoff * (rng.random() if jitter else 1.0)
            at += delay
            delays.append(delay)
            retry_times.append(at)
    return {"boot": {"retry_spread": spread(delays) | {"busiest_100ms": busiest_window(retry_times, 0.1)}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", help="the kicky-agent binary (required but with --synthetic)")
    parser.add_argument(
        "--synthetic", choices=("jitter", "none"),
        help="print the retry spread of a made-up boot of --agents, with or without jitter, and exit",
    )
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument(
        "--rate", action="append", default=[], metavar="SERVICE=N",
        help="requests a second the proxy lets through for SERVICE (ssm, s3, autoscaling); ssm=40 unless given; 0: no limit",
    )
    parser.add_argument("--bound", type=float, default=600, help="seconds to wait for convergence")
    parser.add_argument("--watch", action="store_true", help="then watch a release marker and change it")
    parser.add_argument(
        "--watch-interval", type=float, default=10,
        help=f"seconds between watches (watch.interval), at least {WATCH_FLOOR_S}: the agent refuses less",
    )
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    if args.synthetic:
        report = synthetic_boot(args.agents, args.synthetic == "jitter")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
        print(json.dumps(report))
        return
    if not args.agent:
        parser.error("--agent is required")
    if args.watch and args.watch_interval < WATCH_FLOOR_S:
        # Every agent would exit 2 on its config, and the bench would wait --bound for nothing.
        parser.error(f"--watch-interval {args.watch_interval:g}: at least {WATCH_FLOOR_S} (the agent's floor)")

    moto_url = os.environ["KICKY_RIG_MOTO_URL"]
    region = os.environ["KICKY_RIG_REGION"]
    moto = imds.loopback_target(moto_url)
    limits = {"ssm": 40.0}
    for item in args.rate:
        service, _, value = item.partition("=")
        limits[service] = float(value)
    limits = {s: r for s, r in limits.items() if r > 0}

    tag = f"{os.getpid()}-{secrets.token_hex(3)}"
    prefix, bucket = f"/storm-{tag}", f"kicky-storm-{tag}"
    expected = seed(region, moto_url, prefix, bucket)
    work = Path(tempfile.mkdtemp(prefix="kicky-storm."))
    fleet = proxy = None
    agents: list[Agent] = []
    try:
        proxy = ThrottlingProxy(moto, limits)
        fleet = FleetImds(moto, args.agents, work / "imds")
        for i in range(args.agents):
            agents.append(Agent(i, work))
            (agents[-1].dir / "agent.yaml").write_text(
                config(i, work, proxy.url, prefix, bucket, args.watch_interval if args.watch else None)
            )
        started = time.monotonic()
        for agent, url in zip(agents, fleet.urls):
            spawn(agent, args.agent, url)
        spawned_in = time.monotonic() - started
        wait_ready(agents, started, args.bound)
        boot_calls = proxy.ledger.snapshot()
        report = {
            "limits_per_s": limits,
            "spawned_in_s": round(spawned_in, 2),
            "boot": boot_report(boot_calls, agents),
        }
        report["boot"]["converged"] = sum(1 for a in agents if converged(a, expected))
        report["boot"]["rss_mb"] = rss_mb(agents)
        if args.watch:
            report["watch"] = watch_phase(args, agents, proxy, region, moto_url, prefix, bucket, expected)
        report["logs_with_a_secret"] = leaked(agents, [expected["SERVER_SECRET"], "p@ss"])
    finally:
        stop(agents)
        if fleet:
            fleet.stop()
        if proxy:
            proxy.stop()
        if args.keep:
            print(f"storm: logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def print_report(r: dict) -> None:
    b = r["boot"]
    print(f"limits at the proxy (requests/s): {r['limits_per_s']}; {b['agents']} agents spawned in {r['spawned_in_s']} s")
    print(f"converged: {b['converged']}/{b['agents']} (READY=1: {b['ready']}); all in {b['all_ready_s']} s, median {b['median_ready_s']} s")
    for service, c in b["calls_per_agent"].items():
        print(f"{service:>12} calls per agent: min {c['min']} median {c['median']} max {c['max']} (total {c['total']})")
    print(f"   throttled: {b['throttled'] or 'none'}; SSM actions answered: {b['ssm_actions']}")
    print(f"   daemons' memory (RSS, MB) once converged: {b['rss_mb']}")
    if b["failed_answers"]:
        print(f"   other failed answers: {b['failed_answers']}")
    peak = b["ssm_peak_per_s"]
    print(f"    SSM peak: {peak['asked']} calls asked in one second, {peak['answered']} answered")
    s = b["retry_spread"]
    if s["retries"]:
        print(
            f"     retries: {s['retries']} after a throttling answer, waited {s['delay_min_s']}..{s['delay_max_s']} s "
            f"(median {s['delay_median_s']}, cv {s['delay_cv']}); at most {s['busiest_100ms']} in any 100 ms"
        )
    if "watch" in r:
        w = r["watch"]
        print(f"watch every {w['interval_s']} s: quiet {w['quiet_calls_per_s']} calls/s at the proxy")
        print(
            f"   a change: noticed by {w['noticed']} (all in {w['all_noticed_s']} s), applied by {w['applied']} "
            f"(all in {w['all_applied_s']} s, median {w['median_applied_s']} s); calls/s after {w['after_change_calls_per_s']}, "
            f"throttled {w['throttled_after_change'] or 'none'}"
        )
    print(f"daemon logs holding a seeded secret: {r['logs_with_a_secret']}")


if __name__ == "__main__":
    main()
