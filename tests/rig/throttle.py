"""A throttling HTTP proxy in front of moto, for kicky-agent's fleet tests (tests/bench/storm.py).

Every request is counted by the agent that sent it (the access key id in its SigV4 Authorization
header: each simulated instance gets its own from the fleet's instance metadata), its service (the
signature's credential scope) and its action (X-Amz-Target, the query API's Action, or the S3
method). Above a set rate per service (a token bucket holding one second's worth) it answers as
the service does when a caller goes over its quota, without asking moto:

- SSM and Secrets Manager: HTTP 400 `ThrottlingException` ("Rate exceeded"), JSON;
- S3: HTTP 503 `SlowDown`, XML;
- Auto Scaling: HTTP 400 `Throttling`, XML.

Rules per action (`--rule`) throttle one action whatever the rate: its first N requests, or every
one in the first S seconds, so a test can make exactly DescribeLifecycleHooks or
CompleteLifecycleAction fail for longer than the SDK's own retries last. Rewrites (`--rewrite`)
replace a string in one action's answers: moto has no warm pool lifecycle, so a test relabels the
launch race's `Pending` as `Warmed:Pending:Wait`.

Everything else is forwarded to moto unchanged. Binds 127.0.0.1 only and forwards only to a
loopback moto. Values never appear in what it records: only who asked for what, when, and whether
it was refused.

As a program (for the Rust integration tests), one line of JSON per call goes to --ledger:

    throttle.py --moto http://127.0.0.1:PORT --port-file FILE --ledger FILE \
        [--rule autoscaling:DescribeLifecycleHooks:count=8] [--rule autoscaling:CompleteLifecycleAction:seconds=40] \
        [--rewrite 'autoscaling:DescribeAutoScalingInstances:<LifecycleState>Pending</LifecycleState>=><LifecycleState>Warmed:Pending:Wait</LifecycleState>']
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/[^/]+/([^/]+)/")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}


@dataclass
class Call:
    """One request as the proxy saw it."""

    at: float  # seconds since the proxy started
    agent: str  # the access key id
    service: str  # ssm, s3, autoscaling, secretsmanager, ...
    action: str
    throttled: bool
    status: int


class Bucket:
    """A token bucket: `rate` tokens a second, at most `rate` held (one second's burst)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


@dataclass
class Rule:
    """Throttle one action: its first `count` requests, and every one in the first `seconds`."""

    count: int = 0
    seconds: float = 0.0
    seen: int = 0

    def throttles(self, now: float) -> bool:
        self.seen += 1
        return self.seen <= self.count or now < self.seconds


@dataclass
class Ledger:
    """What the proxy saw, shared by its handler threads; each call also a JSON line in `path`."""

    started: float = field(default_factory=time.monotonic)
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    path: str | None = None

    def add(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)
            if self.path:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(call.__dict__) + "\n")

    def snapshot(self) -> list[Call]:
        with self.lock:
            return list(self.calls)

    def now(self) -> float:
        return time.monotonic() - self.started


def throttled_answer(service: str) -> tuple[int, dict[str, str], bytes]:
    if service == "s3":
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message><RequestId>kicky-throttle</RequestId></Error>"
        )
        return 503, {"Content-Type": "application/xml"}, body
    if service in ("ssm", "secretsmanager"):
        body = b'{"__type":"ThrottlingException","message":"Rate exceeded"}'
        return 400, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": "ThrottlingException"}, body
    body = (
        b'<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><Error><Type>Sender</Type>'
        b"<Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>kicky-throttle</RequestId></ErrorResponse>"
    )
    return 400, {"Content-Type": "text/xml"}, body


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    # Set on a subclass by ThrottlingProxy.
    ledger: Ledger
    buckets: dict[str, Bucket]
    rules: dict[tuple[str, str], Rule]
    rewrites: dict[tuple[str, str], list[tuple[bytes, bytes]]]
    moto: tuple[str, int]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # thousands of requests: the ledger is the log

    def _identify(self, body: bytes) -> tuple[str, str, str]:
        match = CREDENTIAL.search(self.headers.get("Authorization", ""))
        agent, service = (match.group(1), match.group(2)) if match else ("anonymous", "unknown")
        target = self.headers.get("X-Amz-Target")
        if target:
            action = target.rsplit(".", 1)[-1]
        elif service == "s3":
            action = f"{self.command} object"
        else:
            form = urllib.parse.parse_qs(body.decode(errors="replace"))
            action = form.get("Action", [self.command])[0]
        return agent, service, action

    def _relay(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._answer(501, {"Content-Type": "text/plain"}, b"chunked bodies are not relayed")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        # Counted when it arrives (as a quota counts it), not when moto has answered.
        arrived = self.ledger.now()
        agent, service, action = self._identify(body)
        bucket = self.buckets.get(service)
        rule = self.rules.get((service, action))
        with self.ledger.lock:
            ruled = rule is not None and rule.throttles(arrived)
        if ruled or (bucket is not None and not bucket.take()):
            status, headers, answer = throttled_answer(service)
            self.ledger.add(Call(arrived, agent, service, action, True, status))
            self._answer(status, headers, answer)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
        try:
            upstream = http.client.HTTPConnection(*self.moto, timeout=30)
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            answer = response.read()
            for before, after in self.rewrites.get((service, action), []):
                answer = answer.replace(before, after)
            status = response.status
            relayed = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
            # A HEAD's answer has no body but says how long the object is.
            length = int(response.getheader("Content-Length") or 0) if self.command == "HEAD" else len(answer)
            upstream.close()
        except OSError as e:
            status, relayed, answer = 502, {"Content-Type": "text/plain"}, f"moto: {e}".encode()
            length = len(answer)
        self.ledger.add(Call(arrived, agent, service, action, False, status))
        self._answer(status, relayed, answer, length=length)

    def _answer(self, status: int, headers: dict[str, str], body: bytes, length: int | None = None) -> None:
        self.send_response_only(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the agent gave up on this attempt (its timeout); it is counted all the same

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay


class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET
    request_queue_size = 1024
    daemon_threads = True


class ThrottlingProxy:
    """Starts at once on a free 127.0.0.1 port; `rates` is requests a second per service."""

    def __init__(
        self,
        moto: tuple[str, int],
        rates: dict[str, float],
        rules: dict[tuple[str, str], Rule] | None = None,
        rewrites: dict[tuple[str, str], list[tuple[bytes, bytes]]] | None = None,
        ledger_path: str | None = None,
    ) -> None:
        if moto[0] not in ("127.0.0.1", "localhost"):
            raise ValueError(f"moto must be on loopback, got {moto[0]}")
        self.ledger = Ledger(path=ledger_path)
        handler = type(
            "ProxyHandler",
            (Handler,),
            {
                "ledger": self.ledger,
                "buckets": {s: Bucket(r) for s, r in rates.items()},
                "rules": rules or {},
                "rewrites": rewrites or {},
                "moto": moto,
            },
        )
        self.server = Server(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def parse_rule(text: str) -> tuple[tuple[str, str], Rule]:
    """`service:Action:count=N,seconds=S`."""
    service, action, spec = text.split(":", 2)
    rule = Rule()
    for part in spec.split(","):
        key, value = part.split("=", 1)
        if key == "count":
            rule.count = int(value)
        elif key == "seconds":
            rule.seconds = float(value)
        else:
            raise ValueError(f"--rule {text}: unknown {key!r} (count, seconds)")
    return (service, action), rule


def parse_rewrite(text: str) -> tuple[tuple[str, str], tuple[bytes, bytes]]:
    """`service:Action:FROM=>TO`."""
    service, action, spec = text.split(":", 2)
    before, after = spec.split("=>", 1)
    return (service, action), (before.encode(), after.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--moto", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--rule", action="append", default=[])
    parser.add_argument("--rewrite", action="append", default=[])
    parser.add_argument("--rate", action="append", default=[], help="service=requests a second")
    args = parser.parse_args()
    url = urllib.parse.urlparse(args.moto)
    rules = dict(parse_rule(r) for r in args.rule)
    rewrites: dict[tuple[str, str], list[tuple[bytes, bytes]]] = {}
    for text in args.rewrite:
        key, pair = parse_rewrite(text)
        rewrites.setdefault(key, []).append(pair)
    rates = {s: float(r) for s, r in (x.split("=", 1) for x in args.rate)}
    proxy = ThrottlingProxy((url.hostname or "", url.port or 80), rates, rules, rewrites, args.ledger)
    port = proxy.server.server_address[1]
    tmp = f"{args.port_file}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(str(port))
    os.replace(tmp, args.port_file)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    proxy.stop()


if __name__ == "__main__":
    main()
