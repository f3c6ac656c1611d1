"""Lab ECS agent: registers the host as an external container instance and keeps it connected.

Reads `/etc/ecs/ecs.config` then `/var/lib/ecs/ecs.config` (`ecs_config`: the first file wins on
a duplicate key); only `ECS_EXTERNAL=true` with a region makes it an external instance
(anything else exits terminally, as the real agent cannot get an EC2 identity there). Waits
for Docker and for the SSM agent's role credentials (default profile of /root/.aws/credentials),
registers (custom attributes and tags only on the first registration), checkpoints to
`/var/lib/ecs/data/agent.db`, serves the introspection API on `127.0.0.1:51678` and heartbeats
with `DiscoverPollEndpoint`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import re
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from anywhere.lab.agents import common, docker_api, ecs_task_sync
from anywhere.lab.agents.common import AgentSettings, ApiError, Client
from anywhere.lab.agents.ecs_config import (
    ConfigError,
    EcsConfig,
    check_checkpoint,
    load_config,
    require_external,
)

# The agent the lab installer embeds; a lab ecs-init package ships its own version beside
# the agent's code (VERSION_FILE at the root of its tree), read once at start: a running agent
# keeps reporting the version it started as until ecs restarts, as the real agent does.
EMBEDDED_VERSION = "1.89.0"
VERSION_FILE = "ECS_AGENT_VERSION"


def packaged_version(tree: Path) -> str | None:
    try:
        text = (tree / VERSION_FILE).read_text().strip()
    except OSError:
        return None
    return text if re.fullmatch(r"[0-9]+(\.[0-9]+){1,3}", text) else None


AGENT_VERSION = packaged_version(Path(__file__).resolve().parents[3]) or EMBEDDED_VERSION
VERSION_STRING = f"Amazon ECS Agent - v{AGENT_VERSION} (lab)"
CHECKPOINT = "/var/lib/ecs/data/agent.db"
LOG_FILE = "/var/log/ecs/ecs-agent.log"
METADATA_PORT = 51678
ECS = "AmazonEC2ContainerServiceV20141113"
# The real agent's "terminal" exit status: ecs-init does not restart it (RestartPreventExitStatus).
EXIT_TERMINAL = 5
CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "ExpiredTokenException",
        "InvalidSignatureException",
        "AccessDeniedException",
        "InvalidInstanceId",
        "MissingAuthenticationTokenException",
    }
)
NO_CREDENTIALS = "NoCredentialProviders"
EXTERNAL_CAPABILITY = "ecs.capability.external"
# Capabilities the agent reports about itself at registration.
CAPABILITIES = (
    "ecs.capability.execution-role-awslogs",
    "ecs.capability.container-health-check",
    "ecs.capability.task-cpu-mem-limit",
    "com.amazonaws.ecs.capability.logging-driver.json-file",
    "com.amazonaws.ecs.capability.logging-driver.awslogs",
    "com.amazonaws.ecs.capability.logging-driver.none",
    *(f"com.amazonaws.ecs.capability.docker-remote-api.1.{minor}" for minor in range(17, 45)),
)


class TerminalError(RuntimeError):
    """ECS refused the registration for good; the agent exits terminally, as the real one."""


def is_inactive_refusal(err: ApiError) -> bool:
    """ECS's answer to a checkpoint whose container instance was deregistered (INACTIVE)."""
    return err.code == "ClientException" and "is inactive" in err.message


def _memory_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1024


def registration_body(config: EcsConfig, docker_version: str, arn: str | None) -> dict[str, Any]:
    """`RegisterContainerInstance` for an external host (empty identity document).

    Custom attributes and tags go only with a first registration (`arn` None), as the real agent
    sends them; built-in attributes go every time.
    """
    attributes: list[dict[str, str]] = [
        {"name": "ecs.os-type", "value": "linux"},
        {"name": "ecs.os-family", "value": "LINUX"},
        {"name": "ecs.cpu-architecture", "value": platform.machine()},
        *({"name": name} for name in CAPABILITIES),
    ]
    if config.external:
        # The agent announces external mode itself; ECS only stores what it is sent.
        attributes.append({"name": EXTERNAL_CAPABILITY})
    body: dict[str, Any] = {
        "cluster": config.cluster,
        "instanceIdentityDocument": "",
        "instanceIdentityDocumentSignature": "",
        "totalResources": [
            {"name": "CPU", "type": "INTEGER", "integerValue": (os.cpu_count() or 1) * 1024},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": _memory_mb()},
            {
                "name": "PORTS",
                "type": "STRINGSET",
                "stringSetValue": ["22", "2375", "2376", "51678", "51679"],
            },
            {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": []},
        ],
        "versionInfo": {
            "agentVersion": AGENT_VERSION,
            "agentHash": "lab",
            "dockerVersion": f"DockerVersion: {docker_version}",
        },
        "attributes": attributes,
    }
    if arn:
        body["containerInstanceArn"] = arn
    else:
        attributes.extend({"name": k, "value": v} for k, v in sorted(config.attributes.items()))
        body["tags"] = [{"key": k, "value": v} for k, v in sorted(config.tags.items())]
    return body


def _metadata_handler(state: Mapping[str, Any]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/metadata":
                body: Any = dict(state)
            elif self.path.rstrip("/") == "/v1/tasks":
                body = {"Tasks": []}
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@dataclass(frozen=True)
class Agent:
    base: Path
    settings: AgentSettings
    log: logging.Logger
    metadata_port: int = METADATA_PORT

    def run(self, stop: threading.Event) -> int:
        self.log.info("%s starting", VERSION_STRING)
        checkpoint_path = common.under(self.base, CHECKPOINT)
        try:
            config = load_config(self.base)
            require_external(config)
            saved_arn = check_checkpoint(common.read_json(checkpoint_path), config)
        except ConfigError as err:
            self.log.critical("%s", err)
            return EXIT_TERMINAL
        client = Client(
            config.backend_host or self.settings.endpoint_url,
            http_proxy=config.http_proxy,
            no_proxy=config.no_proxy,
            unreachable=self.settings.unreachable,
        )
        docker_version = self._wait_for_docker(stop)
        docker_gone = self._watch_docker(stop)
        try:
            arn = self._register(stop, client, config, docker_version, saved_arn)
        except TerminalError as err:
            self.log.critical("%s", err)
            return EXIT_TERMINAL
        if arn is None:
            return 1 if docker_gone.is_set() else 0
        state = {"Cluster": config.cluster, "ContainerInstanceArn": arn, "Version": VERSION_STRING}
        try:
            server = ThreadingHTTPServer(
                ("127.0.0.1", self.metadata_port), _metadata_handler(state)
            )
        except OSError as err:
            self.log.critical(
                "introspection server cannot listen on :%d: %s", self.metadata_port, err
            )
            return 1
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        ).start()
        try:
            code = self._heartbeat(stop, client, config, arn)
        finally:
            server.shutdown()
            server.server_close()
        return 1 if docker_gone.is_set() else code

    def _wait_for_docker(self, stop: threading.Event) -> str:
        attempt = 0
        while not stop.is_set():
            try:
                return str(docker_api.query(self.base, "/v1.43/version").get("Version", ""))
            except OSError as err:
                if attempt % 10 == 0:
                    self.log.warning("Docker is not answering (%s); waiting", err)
                stop.wait(common.backoff(attempt, 0.5, 5.0))
                attempt += 1
        return ""

    def _watch_docker(self, stop: threading.Event) -> threading.Event:
        """Stop the agent when Docker goes: in production it is a container of that Docker."""
        gone = threading.Event()

        def watch() -> None:
            with contextlib.suppress(OSError):
                docker_api.wait_closed(self.base)
            if not stop.is_set():
                self.log.critical("The Docker daemon went away; the agent stops with it")
                gone.set()
                stop.set()

        threading.Thread(target=watch, name="docker-watch", daemon=True).start()
        return gone

    def _auth(self, config: EcsConfig) -> common.Signer:
        # ecs-init mounts /root/.aws into the agent's container: the SSM agent's shared profile.
        creds = common.read_shared_credentials(self.base) or {}
        key, secret = creds.get("aws_access_key_id", ""), creds.get("aws_secret_access_key", "")
        if not key or not secret:
            raise ApiError(NO_CREDENTIALS, "NoCredentialProviders: no valid providers in chain", 0)
        return common.signer(key, secret, creds.get("aws_session_token", ""), config.region, "ecs")

    def _register(
        self,
        stop: threading.Event,
        client: Client,
        config: EcsConfig,
        docker_version: str,
        saved_arn: str | None,
    ) -> str | None:
        attempt = 0
        while not stop.is_set():
            try:
                answer = client.call(
                    f"{ECS}.RegisterContainerInstance",
                    registration_body(config, docker_version, saved_arn),
                    auth=self._auth(config),
                )
                instance = answer.get("containerInstance") or {}
                arn = str(instance.get("containerInstanceArn", ""))
                checkpoint = {
                    "Cluster": config.cluster,
                    "ContainerInstanceArn": arn,
                    "EC2InstanceID": instance.get("ec2InstanceId", ""),
                    "AgentVersion": AGENT_VERSION,
                }
                common.write_private(common.under(self.base, CHECKPOINT), json.dumps(checkpoint))
                self.log.info(
                    "Registration completed successfully. I am running as '%s' in cluster '%s'",
                    arn,
                    config.cluster,
                )
                return arn
            except ApiError as err:
                if err.code == NO_CREDENTIALS:
                    # The SSM agent writes them within a heartbeat or so: poll, do not back off.
                    stop.wait(0.5)
                    continue
                if saved_arn and is_inactive_refusal(err):
                    # Only removing the checkpoint lets this host register again.
                    raise TerminalError(
                        f"Error re-registering: {err}; the container instance "
                        f"is deregistered: remove {CHECKPOINT} to register "
                        "anew"
                    ) from None
                if err.code == "ClusterNotFoundException" and config.cluster == "default":
                    self._create_default_cluster(client, config)
                self.log.error("Unable to register as a container instance with ECS: %s", err)
                stop.wait(common.backoff(attempt, 1.0, max(5.0, 3 * self.settings.heartbeat_s)))
                attempt += 1
        return None

    def _create_default_cluster(self, client: Client, config: EcsConfig) -> None:
        # The real agent creates the `default` cluster when it is missing, and only that one.
        try:
            client.call(f"{ECS}.CreateCluster", {"clusterName": "default"}, auth=self._auth(config))
        except ApiError as err:
            self.log.error("Unable to create the default cluster: %s", err)

    def _heartbeat(self, stop: threading.Event, client: Client, config: EcsConfig, arn: str) -> int:
        failures = 0
        tasks = ecs_task_sync.TaskSync(
            self.base,
            lambda target, body: client.call(target, body, auth=self._auth(config)),
            config.cluster,
            arn,
            self.log,
        )
        seen: tuple[str, ...] = ()
        while not stop.is_set():
            try:
                found = client.call(
                    f"{ECS}.DiscoverPollEndpoint",
                    {"containerInstance": arn, "cluster": config.cluster},
                    auth=self._auth(config),
                )
                seen = self._log_channels(found, seen)
                if failures:
                    self.log.info("Connected to ECS again")
                failures = 0
                self._sync_tasks(tasks)
                stop.wait(self.settings.heartbeat_s)
            except ecs_task_sync.InstanceInactive:
                self.log.critical(
                    "Container instance %s is inactive (deregistered); exiting. "
                    "Its task containers are left running.",
                    arn,
                )
                return EXIT_TERMINAL
            except ApiError as err:
                if is_inactive_refusal(err):
                    self.log.critical("ECS refuses the container instance: %s", err)
                    return EXIT_TERMINAL
                self.log.warning("DiscoverPollEndpoint failed: %s", err)
                stop.wait(common.backoff(failures, 1.0, self.settings.heartbeat_s))
                failures += 1
        return 0

    def _log_channels(self, found: dict[str, Any], seen: tuple[str, ...]) -> tuple[str, ...]:
        """Name the agent channels DiscoverPollEndpoint gave (ACS, TCS) when they change, as
        the real agent logs the websocket URL it connects to (operators grep for them)."""
        urls = tuple(
            str(found.get(k) or "") for k in ("endpoint", "telemetryEndpoint") if found.get(k)
        )
        if urls != seen:
            for url in urls:
                ws = "wss://" + url.split("://", 1)[-1].rstrip("/") + "/ws"
                self.log.info('Establishing a Websocket connection url="%s"', ws)
        return urls

    def _sync_tasks(self, tasks: ecs_task_sync.TaskSync) -> None:
        try:
            tasks.sync()
        except ApiError as err:
            self.log.warning("Task poll failed: %s", err)
        except OSError as err:
            self.log.warning("Task containers: the Docker daemon did not answer: %s", err)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    del argv
    env = os.environ if environ is None else environ
    base = common.root(env)
    try:
        settings = common.load_settings(base, env)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 1
    log = common.setup_logging(common.under(base, LOG_FILE), "ecs-agent")
    port = int(env.get("LAB_METADATA_PORT") or METADATA_PORT)
    return common.run_until_stopped(Agent(base, settings, log, port).run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
