#!/usr/bin/env python3
"""moto in server mode, as kicky-agent's tests run it: moto's own server, plus the rig's extensions.

Where moto lacks an action the agent needs, the rig extends moto here rather than replacing it: each
extension is one function below that patches moto in-process, listed in PATCHES, applied before the
server starts. Keep each one small and say which moto version lacks what it adds.

    moto_server.py [--port 0] [--port-file FILE]

Binds 127.0.0.1 only. With --port 0 (the default) the kernel picks a free port, which is written to
--port-file once the socket is listening, so there is no window between picking a port and binding it.
"""

import argparse
import os
import signal
import sys
from collections.abc import Callable

def json_denials_for_json_services() -> None:
    """moto 5.2, when it enforces IAM (INITIAL_NO_AUTH_ACTION_COUNT), answers a denial with an XML
    body even to services that speak AWS JSON (SSM, ECR, Auto Scaling's neighbours), which no SDK can
    parse. AWS answers those with a JSON body whose __type is AccessDeniedException: do the same."""
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.core.exceptions import JsonRESTError
    from werkzeug.exceptions import HTTPException

    original = ActionAuthenticatorMixin._authenticate_and_authorize_action

    def authorize(self, iam_request_cls, resource="*"):  # type: ignore[no-untyped-def]
        try:
            original(self, iam_request_cls, resource)
        except HTTPException as err:
            speaks_json = "amz-json" in (self.headers.get("Content-Type") or "")
            if not speaks_json or isinstance(err, JsonRESTError):
                raise
            error_type = getattr(err, "error_type", "AccessDenied")
            if error_type == "AccessDenied":
                error_type = "AccessDeniedException"
            denial = JsonRESTError(error_type, getattr(err, "message", str(err)))
            denial.code = err.code
            raise denial from err

    ActionAuthenticatorMixin._authenticate_and_authorize_action = authorize


def ecr_tokens_that_expire_later() -> None:
    """moto 5.2's ECR GetAuthorizationToken says every token expired on 2015-01-01; a real token
    lasts 12 hours, and the agent caches it until then."""
    from datetime import datetime, timedelta, timezone

    from moto.ecr.responses import ECRResponse

    original = ECRResponse.get_authorization_token

    def get_authorization_token(self):  # type: ignore[no-untyped-def]
        result = original(self)
        for data in result.result["authorizationData"]:
            data["expiresAt"] = datetime.now(timezone.utc) + timedelta(hours=12)
        return result

    ECRResponse.get_authorization_token = get_authorization_token


# Extensions to moto, each a function that patches it in-process. To come: Auto Scaling
# RecordLifecycleActionHeartbeat and CompleteLifecycleAction, which moto 5.2 answers NotImplemented.
PATCHES: list[Callable[[], None]] = [json_denials_for_json_services, ecr_tokens_that_expire_later]


def apply_patches() -> None:
    for patch in PATCHES:
        patch()


def write_port_file(path: str, port: int) -> None:
    # Written whole then renamed, so a reader polling for the file never sees it half written.
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    args = parser.parse_args()

    apply_patches()

    # moto's own `moto_server` entry point is werkzeug's run_simple around these same pieces; building
    # the server ourselves lets us bind port 0 and learn the port before serving.
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        "127.0.0.1", args.port, app, threaded=True, request_handler=MotoRequestHandler
    )
    port = server.server_port
    # moto builds the URLs it hands out for itself (queue URLs, presigned URLs...) from MOTO_PORT.
    os.environ["MOTO_PORT"] = str(port)

    def stop(signum: int, frame: object) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if args.port_file:
        write_port_file(args.port_file, port)
    print(f"moto {moto_version()} listening on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def moto_version() -> str:
    from importlib.metadata import version

    return version("moto")


if __name__ == "__main__":
    main()
