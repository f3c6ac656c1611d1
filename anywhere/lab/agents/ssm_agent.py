"""Lab SSM agent: `-register` like `amazon-ssm-agent`, else the heartbeat daemon.

Registration writes the same files as the real agent (`RegistrationKey` in the vault with the
private key, `/var/lib/amazon/ssm/registration`); the daemon trades the registration for role
credentials and sends `UpdateInstanceInformation` every heartbeat. The activation code is read
from `-code` or, with `-code -`, from stdin, and is never logged or written.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import platform
import secrets
import socket
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from anywhere.lab.agents import common, ssm_run_command, ssm_update
from anywhere.lab.agents.common import AgentSettings, ApiError, Client

# The version the lab installer installs; an update replaces it (`ssm_update.installed`).
AGENT_VERSION = ssm_update.RELEASES[0]
REGISTRATION_KEY = "/var/lib/amazon/ssm/Vault/Store/RegistrationKey"
FINGERPRINT_FILE = "/var/lib/amazon/ssm/Vault/Store/InstanceFingerprint"
REGISTRATION_FILE = "/var/lib/amazon/ssm/registration"
LOG_FILE = "/var/log/amazon/ssm/amazon-ssm-agent.log"
MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")
# Codes after which the real agent hibernates: its identity is gone or no longer trusted.
HIBERNATE_CODES = frozenset(
    {"InvalidInstanceId", "MachineFingerprintDoesNotMatch", "AccessDeniedException"}
)
CREDENTIAL_CODES = frozenset(
    {"ExpiredTokenException", "UnrecognizedClientException", "InvalidSignatureException"}
)
# Refresh role credentials this long before they expire.
REFRESH_MARGIN_S = 300.0


@dataclass(frozen=True)
class Registration:
    instance_id: str
    region: str
    private_key: str


def _machine_id(base: Path) -> str:
    for name in MACHINE_ID_FILES:
        path = common.under(base, name)
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
    raise RuntimeError("[lab] no machine-id found in /etc/machine-id or /var/lib/dbus/machine-id")


def fingerprint(base: Path) -> str:
    """The instance fingerprint: kept while the machine-id is unchanged, else a new one.

    The real agent does the same with a hardware hash that includes the machine-id, so a changed
    machine-id makes AWS answer `MachineFingerprintDoesNotMatch`.
    """
    hardware = hashlib.sha256(_machine_id(base).encode()).hexdigest()
    path = common.under(base, FINGERPRINT_FILE)
    stored = common.read_json(path)
    if stored and stored.get("hardwareHash") == hardware and stored.get("fingerprint"):
        return str(stored["fingerprint"])
    value = str(uuid.uuid4())
    common.write_private(path, json.dumps({"fingerprint": value, "hardwareHash": hardware}))
    return value


def load_registration(base: Path) -> Registration | None:
    data = common.read_json(common.under(base, REGISTRATION_KEY))
    if not data or not data.get("instanceID"):
        return None
    return Registration(
        instance_id=str(data["instanceID"]),
        region=str(data.get("region", "")),
        private_key=str(data.get("privateKey", "")),
    )


def _store_key(base: Path, instance_id: str, region: str, private_key: str) -> None:
    key = {
        "instanceID": instance_id,
        "region": region,
        "availabilityZone": "",
        "privateKey": private_key,
        "privateKeyType": "Rsa",
        "privateKeyCreatedDate": common.utc_now(),
    }
    # Compact, as Go's encoding/json writes it.
    common.write_private(
        common.under(base, REGISTRATION_KEY), json.dumps(key, separators=(",", ":"))
    )


def public_key(private_key: str) -> str:
    """The key registered with the instance; it also keys the lab's stand-in for RSA signing.

    [lab] The real agent signs `RequestManagedInstanceRoleToken`'s SigV4 string with its RSA
    private key and AWS checks it against the registered public key. Python's stdlib has no RSA,
    so the lab signs that call with SigV4's HMAC keyed by the registered key instead: a request
    signed with any other instance's key, or none, is still refused.
    """
    return base64.b64encode(hashlib.sha256(private_key.encode()).digest()).decode()


def register(
    base: Path, client: Client, code: str, *, activation_id: str, region: str, out: TextIO
) -> int:
    """Register with the activation; prints like the real agent and returns its exit code."""
    private_key = base64.b64encode(secrets.token_bytes(32)).decode()
    # As the real agent: the key pair goes into the vault with an empty instance id before SSM
    # is called (it proves the vault is writable), so a failed registration leaves it behind.
    _store_key(base, "", "", private_key)
    body = {
        "ActivationId": activation_id,
        "ActivationCode": code,
        "PublicKey": public_key(private_key),
        "PublicKeyType": "Rsa",
        "Fingerprint": fingerprint(base),
    }
    try:
        # Unsigned, as the real agent's call: the activation code is the credential.
        answer = common.call_with_retry(
            lambda: client.call("AmazonSSM.RegisterManagedInstance", body),
            threading.Event(),
            logging.getLogger("amazon-ssm-agent.register"),
        )
    except ApiError as err:
        print(
            "Registration failed due to error registering the instance with AWS SSM. "
            f"{err.code or 'RequestError'}: {err.message}",
            file=out,
        )
        return 1
    instance_id = str(answer.get("InstanceId", ""))
    if not instance_id.startswith("mi-"):
        print(f"Registration failed: [lab] unexpected answer {sorted(answer)}", file=out)
        return 1
    _store_key(base, instance_id, region, private_key)
    common.write_private(
        common.under(base, REGISTRATION_FILE),
        json.dumps({"ManagedInstanceID": instance_id, "Region": region}),
        mode=0o644,
    )
    print(
        "Successfully registered the instance with AWS SSM using Managed instance-id: "
        f"{instance_id}",
        file=out,
    )
    return 0


def _expiry(value: Any) -> float:
    """Seconds since the epoch from an epoch number or an ISO 8601 string; 0 when unknown."""
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def fetch_credentials(base: Path, client: Client, reg: Registration) -> dict[str, Any]:
    """`RequestManagedInstanceRoleToken`, signed as the instance; shared with the ECS agent in
    the default profile of /root/.aws/credentials (0600), as the real agent's ShareCreds does."""
    body = {"Fingerprint": fingerprint(base)}
    answer = client.call(
        "AmazonSSM.RequestManagedInstanceRoleToken",
        body,
        auth=common.signer(reg.instance_id, public_key(reg.private_key), "", reg.region, "ssm"),
    )
    creds = {
        "AccessKeyId": answer["AccessKeyId"],
        "SecretAccessKey": answer["SecretAccessKey"],
        "SessionToken": answer.get("SessionToken", ""),
        "InstanceId": reg.instance_id,
        "Region": reg.region,
        "Expiration": _expiry(answer.get("TokenExpirationDate")),
    }
    common.store_shared_credentials(
        base, str(creds["AccessKeyId"]), str(creds["SecretAccessKey"]), str(creds["SessionToken"])
    )
    return creds


def _os_release(base: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    path = common.under(base, "/etc/os-release")
    if path.is_file():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip().strip('"')
    return values


def _ip_address(endpoint_url: str) -> str:
    """The local address that routes to the endpoint (a UDP connect sends nothing)."""
    host = urllib.parse.urlsplit(endpoint_url).hostname or "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((host, 9))
            return str(sock.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def heartbeat(
    base: Path,
    client: Client,
    reg: Registration,
    creds: Mapping[str, Any],
    version: str = AGENT_VERSION,
) -> None:
    release = _os_release(base)
    body = {
        "InstanceId": reg.instance_id,
        "AgentName": "amazon-ssm-agent",
        "AgentVersion": version,
        "PlatformName": release.get("NAME", "Linux"),
        "PlatformType": "Linux",
        "PlatformVersion": release.get("VERSION_ID", ""),
        "IPAddress": _ip_address(client.url),
        "ComputerName": socket.gethostname(),
    }
    client.call(
        "AmazonSSM.UpdateInstanceInformation",
        body,
        auth=common.signer(
            str(creds["AccessKeyId"]),
            str(creds["SecretAccessKey"]),
            str(creds.get("SessionToken", "")),
            reg.region,
            "ssm",
        ),
    )


@dataclass(frozen=True)
class Daemon:
    base: Path
    settings: AgentSettings
    log: logging.Logger
    client: Client

    def run(self, stop: threading.Event) -> int:
        client = self.client
        creds: dict[str, Any] | None = None
        failures = 0
        # What the Run Command worker signs with: (instance id, region, credentials).
        shared: list[tuple[str, str, dict[str, Any]] | None] = [None]
        version = ssm_update.installed(self.base)
        worker = ssm_run_command.Worker(self.base, client, self.log, lambda: shared[0], version)
        threading.Thread(target=worker.run, args=(stop,), name="runcommand", daemon=True).start()
        self.log.info(
            "amazon-ssm-agent %s (lab) starting; endpoint %s",
            version,
            self.settings.endpoint_url,
        )
        while not stop.is_set():
            reg = load_registration(self.base)
            if reg is None:
                self.log.error(
                    "Failed to load instance info from vault. RegistrationKey does not exist."
                )
                failures += 1
                stop.wait(common.backoff(failures, self.settings.heartbeat_s, 300.0))
                continue
            try:
                if (
                    creds is None
                    or creds.get("InstanceId") != reg.instance_id
                    or (0 < float(creds["Expiration"]) - REFRESH_MARGIN_S < _now())
                ):
                    creds = fetch_credentials(self.base, client, reg)
                    self.log.info("role credentials refreshed for %s", reg.instance_id)
                    shared[0] = (reg.instance_id, reg.region, creds)
                heartbeat(self.base, client, reg, creds, version)
                if failures:
                    self.log.info("heartbeat resumed for %s", reg.instance_id)
                failures = 0
                stop.wait(self.settings.heartbeat_s)
            except ApiError as err:
                creds = None if err.code in HIBERNATE_CODES | CREDENTIAL_CODES else creds
                shared[0] = shared[0] if creds else None
                stop.wait(self._delay(err, failures))
                failures += 1
        self.log.info("amazon-ssm-agent stopping")
        return 0

    def _delay(self, err: ApiError, failures: int) -> float:
        if err.code in HIBERNATE_CODES:
            # The real agent backs off exponentially while hibernating; the lab scales it down.
            delay = common.backoff(
                failures, self.settings.heartbeat_s, 30 * self.settings.heartbeat_s
            )
            self.log.error(
                "Entering SSM Agent hibernate - %s. SSM Agent is hibernating; next "
                "attempt in %.0fs",
                err,
                delay,
            )
            return delay
        delay = common.backoff(failures, 1.0, self.settings.heartbeat_s)
        self.log.warning("heartbeat failed: %s; retrying in %.1fs", err, delay)
        return delay


def _now() -> float:
    return datetime.now(timezone.utc).timestamp()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amazon-ssm-agent", add_help=True)
    parser.add_argument("-register", "--register", action="store_true")
    parser.add_argument("-code", "--code", default="", help="activation code, or - for stdin")
    parser.add_argument("-id", "--id", default="")
    parser.add_argument("-region", "--region", default="")
    parser.add_argument("-y", "--y", action="store_true", help="replace an existing registration")
    parser.add_argument("-version", "--version", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = _parser().parse_args(argv)
    base = common.root(env)
    if args.version:
        print(f"SSM Agent version: {ssm_update.installed(base)} (lab, {platform.machine()})")
        return 0
    try:
        settings = common.load_settings(base, env)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 1
    proxy, no_proxy = common.proxy_from_env(settings.endpoint_url, env)
    client = Client(
        settings.endpoint_url, http_proxy=proxy, no_proxy=no_proxy, unreachable=settings.unreachable
    )
    if args.register:
        return _register_command(base, client, args)
    log = common.setup_logging(common.under(base, LOG_FILE), "amazon-ssm-agent")
    return common.run_until_stopped(Daemon(base, settings, log, client).run)


def _register_command(base: Path, client: Client, args: argparse.Namespace) -> int:
    code = sys.stdin.readline().strip() if args.code == "-" else str(args.code)
    if not (code and args.id and args.region):
        print("Registration requires -code, -id and -region", file=sys.stderr)
        return 1
    existing = load_registration(base)
    if existing is not None and not args.y:
        print(
            f"The instance is already registered as {existing.instance_id}; "
            "use -y to replace the registration",
            file=sys.stderr,
        )
        return 1
    return register(base, client, code, activation_id=args.id, region=args.region, out=sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
