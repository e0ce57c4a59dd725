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


def s3_expected_bucket_owner() -> None:
    """moto 5.2 ignores S3's `x-amz-expected-bucket-owner` header (ExpectedBucketOwner) and serves
    any account's bucket. AWS answers 403 AccessDenied when the bucket belongs to an account other
    than the one the header names: do the same, for every bucket and object request. (A test makes
    a bucket of another account with moto's own `x-moto-account-id` header.)"""
    from moto.s3.exceptions import S3AccessDeniedError
    from moto.s3.models import s3_backends
    from moto.s3.responses import S3Response

    def checked(original):  # type: ignore[no-untyped-def]
        def response(self, request, full_url):  # type: ignore[no-untyped-def]
            expected = request.headers.get("x-amz-expected-bucket-owner")
            bucket = self.parse_bucket_name_from_url(request, full_url)
            owner = s3_backends.bucket_accounts.get(bucket)
            if expected and owner is not None and owner[1] != expected:
                raise S3AccessDeniedError()
            return original(self, request, full_url)

        return response

    S3Response._bucket_response = checked(S3Response._bucket_response)
    S3Response._key_response = checked(S3Response._key_response)


LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"


def autoscaling_launch_hooks_wait() -> None:
    """moto 5.2 puts every instance an Auto Scaling group launches straight InService, even when the
    group has a lifecycle hook for EC2_INSTANCE_LAUNCHING. AWS holds such an instance in
    `Pending:Wait` until CompleteLifecycleAction or the hook's heartbeat timeout: do the same, and
    remember the pending action (its hook, token and deadline) on the instance's state.

    Pending instances count towards the group's capacity, as on AWS, so that a later capacity change
    does not launch a second instance beside the one waiting.

    A group tagged `kicky-rig:action-delay` (seconds) shows the launch race: its new instances stay
    `Pending`, with no active action (heartbeats and completions are refused as on AWS), for that
    long before the action is recorded and they go to `Pending:Wait`."""
    import time
    import uuid

    from moto.autoscaling.models import FakeAutoScalingGroup

    original_replace = FakeAutoScalingGroup.replace_autoscaling_group_instances

    def replace_autoscaling_group_instances(self, count_needed, propagated_tags):  # type: ignore[no-untyped-def]
        before = len(self.instance_states)
        original_replace(self, count_needed, propagated_tags)
        hooks = [
            h
            for h in self.autoscaling_backend.lifecycle_hooks.values()
            if h.auto_scaling_group_name == self.name and h.lifecycle_transition == LAUNCHING
        ]
        if not hooks:
            return
        # AWS runs a group's launch hooks together; one is what the agent and the tests use.
        hook = hooks[0]
        now = time.time()
        delay = next((float(t["Value"]) for t in self.tags if t.get("Key") == "kicky-rig:action-delay"), 0.0)
        for state in self.instance_states[before:]:
            state.lifecycle_state = "Pending" if delay else "Pending:Wait"
            state.lifecycle_action = {
                "hook": hook.name,
                "token": str(uuid.uuid4()),
                "started": now,
                "active_from": now + delay,
                "heartbeat": None,
                "deadline": now + delay + hook.heartbeat_timeout,
                "default_result": hook.default_result,
            }

    counted = ("Pending", "Pending:Wait", "Pending:Proceed", "InService")

    def active_instances(self):  # type: ignore[no-untyped-def]
        return [s for s in self.instance_states if s.lifecycle_state in counted]

    FakeAutoScalingGroup.replace_autoscaling_group_instances = replace_autoscaling_group_instances
    FakeAutoScalingGroup.active_instances = active_instances


def autoscaling_termination_hooks_wait() -> None:
    """moto 5.2 terminates an instance at once on TerminateInstanceInAutoScalingGroup, even when its
    group has a lifecycle hook for EC2_INSTANCE_TERMINATING. AWS holds such an instance in
    `Terminating:Wait` until CompleteLifecycleAction (either result: the instance terminates) or the
    hook's heartbeat timeout: do the same, with the pending action remembered as for launch hooks
    (see autoscaling_lifecycle_actions, which moves it on)."""
    import time
    import uuid

    from moto.autoscaling.models import AutoScalingBackend, TerminateInstanceActivity

    original = AutoScalingBackend.terminate_instance

    def terminate_instance(self, instance_id, should_decrement):  # type: ignore[no-untyped-def]
        for group in self.autoscaling_groups.values():
            for state in group.instance_states:
                if state.instance.id != instance_id:
                    continue
                hooks = [
                    h
                    for h in self.lifecycle_hooks.values()
                    if h.auto_scaling_group_name == group.name and h.lifecycle_transition == TERMINATING
                ]
                if not hooks:
                    return original(self, instance_id, should_decrement)
                now = time.time()
                state.lifecycle_state = "Terminating:Wait"
                state.lifecycle_action = {
                    "hook": hooks[0].name,
                    "token": str(uuid.uuid4()),
                    "started": now,
                    "heartbeat": None,
                    "deadline": now + hooks[0].heartbeat_timeout,
                    "default_result": hooks[0].default_result,
                    "terminating": True,
                }
                return TerminateInstanceActivity(state.instance, group.desired_capacity)
        return original(self, instance_id, should_decrement)

    AutoScalingBackend.terminate_instance = terminate_instance


def autoscaling_lifecycle_actions() -> None:
    """moto 5.2 answers RecordLifecycleActionHeartbeat and CompleteLifecycleAction with
    NotImplemented. Accept them for an instance held in `Pending:Wait` by a launch hook (see
    autoscaling_launch_hooks_wait), validating the group, the hook and the instance (or the action
    token) as AWS does: a heartbeat pushes the deadline back by the hook's heartbeat timeout;
    CONTINUE puts the instance InService, ABANDON sets it `Terminating` and terminates it in EC2
    (moto launches no replacement by itself). An action whose deadline passed gets the hook's default
    result the next time the group is looked at. Each action is recorded on the instance's state
    (`lifecycle_action`, `lifecycle_result`) and logged to stderr. An instance held in
    `Terminating:Wait` (autoscaling_termination_hooks_wait) goes on to `Terminating:Proceed` and is
    terminated in EC2, whichever the result."""
    import time

    from moto.autoscaling.exceptions import ValidationError
    from moto.autoscaling.models import AutoScalingBackend
    from moto.autoscaling.responses import AutoScalingResponse
    from moto.core.responses import EmptyResult

    WAITING = ("Pending:Wait", "Terminating:Wait")

    def log(message: str) -> None:
        print(f"moto lifecycle: {message}", file=sys.stderr, flush=True)

    def finish(backend, state, result: str, how: str) -> None:  # type: ignore[no-untyped-def]
        action = state.lifecycle_action
        state.lifecycle_action = None
        state.lifecycle_result = {"hook": action["hook"], "result": result, "how": how, "at": time.time()}
        log(f"{state.auto_scaling_group_name}/{action['hook']}/{state.instance.id}: {result} ({how})")
        if action.get("terminating"):
            state.lifecycle_state = "Terminating:Proceed"
            backend.ec2_backend.terminate_instances([state.instance.id])
        elif result == "CONTINUE":
            state.lifecycle_state = "InService"
        else:
            state.lifecycle_state = "Terminating"
            backend.ec2_backend.terminate_instances([state.instance.id])

    def expire(backend) -> None:  # type: ignore[no-untyped-def]
        now = time.time()
        for group in backend.autoscaling_groups.values():
            for state in group.instance_states:
                action = getattr(state, "lifecycle_action", None)
                # The launch race (kicky-rig:action-delay): the action is recorded now.
                if action and state.lifecycle_state == "Pending" and action.get("active_from", 0) <= now:
                    state.lifecycle_state = "Pending:Wait"
                if action and state.lifecycle_state in WAITING and action["deadline"] <= now:
                    finish(backend, state, action["default_result"], "heartbeat timeout")

    def pending(backend, group_name, hook_name, instance_id, token):  # type: ignore[no-untyped-def]
        expire(backend)
        group = backend.autoscaling_groups.get(group_name or "")
        if group is None:
            raise ValidationError(f"AutoScalingGroup name not found - {group_name}")
        if f"{group_name}_{hook_name}" not in backend.lifecycle_hooks:
            raise ValidationError(f"No Lifecycle Hook found with name {hook_name} for group {group_name}")
        if not instance_id and not token:
            raise ValidationError("Either InstanceId or LifecycleActionToken must be given")
        for state in group.instance_states:
            action = getattr(state, "lifecycle_action", None)
            if (
                action
                and state.lifecycle_state in WAITING
                and action["hook"] == hook_name
                and (not instance_id or state.instance.id == instance_id)
                and (not token or action["token"] == token)
            ):
                return state
        if instance_id:
            raise ValidationError(f"No active Lifecycle Action found with instance ID {instance_id}")
        raise ValidationError(f"No active Lifecycle Action found with token {token}")

    def request(self):  # type: ignore[no-untyped-def]
        return (
            self.autoscaling_backend,
            self._get_param("AutoScalingGroupName"),
            self._get_param("LifecycleHookName"),
            self._get_param("InstanceId"),
            self._get_param("LifecycleActionToken"),
        )

    def record_lifecycle_action_heartbeat(self):  # type: ignore[no-untyped-def]
        backend, group, hook, instance, token = request(self)
        state = pending(backend, group, hook, instance, token)
        now = time.time()
        state.lifecycle_action["heartbeat"] = now
        state.lifecycle_action["deadline"] = now + backend.lifecycle_hooks[f"{group}_{hook}"].heartbeat_timeout
        log(f"{group}/{hook}/{state.instance.id}: heartbeat")
        return EmptyResult()

    def complete_lifecycle_action(self):  # type: ignore[no-untyped-def]
        backend, group, hook, instance, token = request(self)
        result = self._get_param("LifecycleActionResult")
        if result not in ("CONTINUE", "ABANDON"):
            raise ValidationError(f"Invalid LifecycleActionResult {result!r}: expected CONTINUE or ABANDON")
        state = pending(backend, group, hook, instance, token)
        finish(backend, state, result, "CompleteLifecycleAction")
        return EmptyResult()

    original_describe = AutoScalingBackend.describe_auto_scaling_instances

    def describe_auto_scaling_instances(self, instance_ids):  # type: ignore[no-untyped-def]
        expire(self)
        return original_describe(self, instance_ids)

    AutoScalingResponse.record_lifecycle_action_heartbeat = record_lifecycle_action_heartbeat
    AutoScalingResponse.complete_lifecycle_action = complete_lifecycle_action
    AutoScalingBackend.describe_auto_scaling_instances = describe_auto_scaling_instances


# Extensions to moto, each a function that patches it in-process.
PATCHES: list[Callable[[], None]] = [
    json_denials_for_json_services,
    ecr_tokens_that_expire_later,
    s3_expected_bucket_owner,
    autoscaling_launch_hooks_wait,
    autoscaling_termination_hooks_wait,
    autoscaling_lifecycle_actions,
]


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
