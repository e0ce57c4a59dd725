#!/usr/bin/env python3
"""An IMDSv2 layer in front of moto, for kicky-agent's tests: AWS_EC2_METADATA_SERVICE_ENDPOINT points here.

moto 5.x serves instance metadata (role credentials among it) but not the IMDSv2 protocol the AWS Rust
SDK insists on: its token answer lacks the `x-aws-ec2-metadata-token-ttl-seconds` header (the SDK
fails with `NoTtl`), it checks no token, and it has no user data or instance tags. This layer issues
and checks tokens as the real service does, answers user data, tags, region, availability zone,
instance id and the identity document from a fixture directory, and forwards every other
/latest/meta-data/ path (the role credentials) to moto.

    imds.py --moto http://127.0.0.1:PORT --fixture DIR [--port 0] [--port-file FILE]

The fixture is re-read on every request, so a test may change it while the layer runs. Files, all
optional: `user-data` (served as is; absent: 404), `tags.json` (a JSON object of tag key to value;
absent: tags in metadata disabled, 404), `target-lifecycle-state` (Auto Scaling's
`autoscaling/target-lifecycle-state`; absent: 404, not in a group), `region`, `availability-zone`,
`instance-id`, `instance-life-cycle` (`spot`, `on-demand`; absent: 404), `spot-instance-action`
(`spot/instance-action`, the interruption notice's JSON; absent: 404), `rebalance-recommendation`
(`events/recommendations/rebalance`, its JSON; absent: 404), `lookup-delay`
(seconds to wait before answering the instance id, where the agent's lifecycle lookup starts; the
SDK's reads of credentials and region, and the agent's of user data and tags for its config, are
answered at once).

Binds 127.0.0.1 only; with --port 0 (the default) the kernel picks the port, written to --port-file once
the socket listens. Requests are logged to stderr, never with their tokens.
"""

import argparse
import http.client
import ipaddress
import json
import os
import secrets
import signal
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DEFAULT_REGION = "ap-northeast-2"
DEFAULT_AZ = "ap-northeast-2a"
DEFAULT_INSTANCE_ID = "i-0123456789abcdef0"
# moto's default account, so the identity document names the account moto's resources live in.
ACCOUNT_ID = "123456789012"
MAX_TTL = 21600
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"


class Tokens:
    """Tokens issued, with when each expires (monotonic seconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}

    def issue(self, ttl: int) -> str:
        token = secrets.token_urlsafe(42)
        now = time.monotonic()
        with self._lock:
            # Drop the expired ones so a long test run does not grow the table without bound.
            self._expiry = {t: e for t, e in self._expiry.items() if e > now}
            self._expiry[token] = now + ttl
        return token

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            expiry = self._expiry.get(token)
        return expiry is not None and expiry > time.monotonic()


class Fixture:
    """The instance this layer pretends to be, read from a directory on every request."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _read(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None

    def _text(self, name: str, default: str) -> str:
        raw = self._read(name)
        value = raw.decode().strip() if raw is not None else ""
        return value or default

    def user_data(self) -> bytes | None:
        return self._read("user-data")

    def tags(self) -> dict[str, str] | None:
        raw = self._read("tags.json")
        if raw is None:
            return None
        tags = json.loads(raw)
        if not isinstance(tags, dict):
            raise ValueError(f"{self.root / 'tags.json'}: expected a JSON object")
        return {str(k): str(v) for k, v in tags.items()}

    def region(self) -> str:
        return self._text("region", DEFAULT_REGION)

    def availability_zone(self) -> str:
        return self._text("availability-zone", DEFAULT_AZ)

    def instance_id(self) -> str:
        return self._text("instance-id", DEFAULT_INSTANCE_ID)

    def lookup_delay(self) -> float:
        return float(self._text("lookup-delay", "0"))

    def identity_document(self) -> bytes:
        doc = {
            "accountId": ACCOUNT_ID,
            "architecture": "x86_64",
            "availabilityZone": self.availability_zone(),
            "imageId": "ami-0123456789abcdef0",
            "instanceId": self.instance_id(),
            "instanceType": "t3.small",
            "pendingTime": "2024-01-01T00:00:00Z",
            "privateIp": "127.0.0.1",
            "region": self.region(),
            "version": "2017-09-30",
        }
        return json.dumps(doc, indent=2).encode()


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so the SDK's pooled connections are kept; every answer carries a Content-Length.
    protocol_version = "HTTP/1.1"
    server_version = "kicky-rig-imds"
    # Headers and body go out in separate writes: without TCP_NODELAY, each answer on a kept
    # connection waits out the client's 40 ms delayed ACK (the real IMDS answers at once).
    disable_nagle_algorithm = True

    # Set on the class by main().
    tokens: Tokens
    fixture: Fixture
    moto: tuple[str, int]

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        # The base class logs the request line only: the token travels in a header, so it never shows.
        stamp = time.strftime("%H:%M:%S")
        sys.stderr.write(f"imds: {stamp} {self.address_string()} {format % args}\n")

    def _drain_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", (headers or {}).pop("Content-Type", "text/plain"))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_PUT(self) -> None:
        self._drain_body()
        path = urllib.parse.urlsplit(self.path).path
        if path != "/latest/api/token":
            self._send(405)
            return
        # Real IMDS refuses tokens to anything that came through a proxy.
        if "X-Forwarded-For" in self.headers:
            self._send(403, b"Forbidden")
            return
        raw_ttl = self.headers.get(TTL_HEADER, "").strip()
        if not raw_ttl.isdigit() or not 1 <= int(raw_ttl) <= MAX_TTL:
            self._send(400, b"Bad Request: token TTL missing or outside 1..21600")
            return
        ttl = int(raw_ttl)
        self._send(200, self.tokens.issue(ttl).encode(), {TTL_HEADER: str(ttl)})

    def do_GET(self) -> None:
        self._drain_body()
        path = urllib.parse.urlsplit(self.path).path
        if not path.startswith("/latest/"):
            self._send(404, b"Not Found")
            return
        if path == "/latest/api/token":
            self._send(405)
            return
        if not self.tokens.valid(self.headers.get(TOKEN_HEADER)):
            self._send(401, b"Unauthorized")
            return
        try:
            answer = self._local(path)
        except (ValueError, UnicodeDecodeError) as e:
            self._send(500, f"fixture: {e}".encode())
            return
        if answer is not None:
            status, body = answer
            self._send(status, body)
        elif path.startswith("/latest/meta-data/"):
            self._forward(path)
        else:
            self._send(404, b"Not Found")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        self._drain_body()
        self._send(405)

    do_DELETE = do_PATCH = do_POST

    def _local(self, path: str) -> tuple[int, bytes] | None:
        """The answer for what the layer serves itself, or None for what goes to moto."""
        fx = self.fixture
        if path == "/latest/user-data":
            data = fx.user_data()
            return (200, data) if data is not None else (404, b"Not Found")
        if path == "/latest/dynamic/instance-identity/document":
            return 200, fx.identity_document()
        meta = path.removeprefix("/latest/meta-data/")
        if meta == path:
            return None
        if meta == "autoscaling/target-lifecycle-state":
            state = fx._read("target-lifecycle-state")
            return (200, state.strip()) if state is not None else (404, b"Not Found")
        spot = {
            "instance-life-cycle": "instance-life-cycle",
            "spot/instance-action": "spot-instance-action",
            "events/recommendations/rebalance": "rebalance-recommendation",
        }
        if meta in spot:
            found = fx._read(spot[meta])
            return (200, found.strip()) if found is not None else (404, b"Not Found")
        simple = {
            "placement/region": fx.region,
            "placement/availability-zone": fx.availability_zone,
            "instance-id": fx.instance_id,
        }
        tag_path = meta.rstrip("/") in ("tags", "tags/instance") or meta.startswith("tags/instance/")
        if meta == "instance-id":
            time.sleep(fx.lookup_delay())
        if meta in simple:
            return 200, simple[meta]().encode()
        if tag_path:
            tags = fx.tags()
            # Tags in metadata disabled: real IMDS has no such path at all.
            if tags is None:
                return 404, b"Not Found"
            if meta.rstrip("/") == "tags":
                return 200, b"instance"
            if meta.rstrip("/") == "tags/instance":
                return 200, "\n".join(tags).encode()
            key = urllib.parse.unquote(meta.removeprefix("tags/instance/"))
            return (200, tags[key].encode()) if key in tags else (404, b"Not Found")
        return None

    def _forward(self, path: str) -> None:
        # moto's server routes /latest/meta-data/ by path alone, whatever the Host header says.
        conn = http.client.HTTPConnection(*self.moto, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            status = resp.status
            content_type = resp.getheader("Content-Type", "text/plain")
        except OSError as e:
            self._send(502, f"moto at {self.moto[0]}:{self.moto[1]} did not answer: {e}".encode())
            return
        finally:
            conn.close()
        # moto raises NotImplementedError (a 500) for a path it does not know; real IMDS says 404, and
        # a 500 would only make the SDK retry.
        if status == 500:
            self.log_message("moto has no %s; answering 404", path)
            self._send(404, b"Not Found")
            return
        self._send(status, body, {"Content-Type": content_type})


class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET
    # Tests run in parallel and the SDK opens several connections at once; the default backlog is 5.
    request_queue_size = 128
    # A stuck client must not keep the process from exiting on TERM.
    daemon_threads = True


def loopback_target(url: str) -> tuple[str, int]:
    """host and port of the moto URL, which must be on this machine: the rig sends nothing elsewhere."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise SystemExit(f"imds.py: --moto must be http://HOST:PORT, got {url!r}")
    host = parts.hostname
    addr = "127.0.0.1" if host == "localhost" else host
    try:
        loopback = ipaddress.ip_address(addr).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"imds.py: --moto must be a loopback address, got {host!r}")
    return addr, parts.port


def write_port_file(path: str, port: int) -> None:
    # Written whole then renamed, so a reader polling for the file never sees it half written.
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moto", required=True, help="moto's URL, http://127.0.0.1:PORT")
    parser.add_argument("--fixture", required=True, type=Path, help="the fixture directory")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    args = parser.parse_args()

    Handler.tokens = Tokens()
    Handler.fixture = Fixture(args.fixture)
    Handler.moto = loopback_target(args.moto)

    server = Server(("127.0.0.1", args.port), Handler)
    port = server.server_address[1]

    def stop(signum: int, frame: object) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if args.port_file:
        write_port_file(args.port_file, port)
    print(f"imds: listening on http://127.0.0.1:{port}, moto at {args.moto}, fixture {args.fixture}",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
