#!/usr/bin/env bash
# ECS Anywhere install script for host gpu-rack3-07, rendered by anywhere.
# Region eu-central-1, cluster ml-prod.
set -euo pipefail
set +x  # never trace: the activation code passes through shell variables
umask 022

# Every path written is under ROOT ("" on a real host; a scratch directory in tests).
ROOT=''

log() { printf 'anywhere: %s\n' "$*"; }
warn() { printf 'anywhere: warning: %s\n' "$*" >&2; }
die() { printf 'anywhere: error: %s\n' "$1" >&2; exit "${2:-1}"; }

if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
  die "must run as root (use sudo)" 2
fi
# systemctl acts on the real machine only, never on a ROOT-prefixed tree.
have_systemd() { [ -z "$ROOT" ] && command -v systemctl >/dev/null 2>&1; }
host_name=gpu-rack3-07

# Everything fetched or staged lives here (mktemp -d: mode 0700); the trap removes it on
# every exit path. Signals exit through the EXIT trap too.
work="$(mktemp -d "${TMPDIR:-/tmp}/anywhere-install.XXXXXXXX")"
trap 'rm -rf -- "$work"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
# The controller's connection gone: the first write fails, and the EXIT trap still cleans up.
trap 'exit 141' PIPE

# The activation id and code arrive on stdin: never in argv of this script, env or files.
activation_id=""
activation_code=""
IFS= read -r activation_id || true
IFS= read -r activation_code || true
# Tolerate CRLF input (a secrets file saved on Windows).
activation_id="${activation_id%$'\r'}"
activation_code="${activation_code%$'\r'}"
if [ -z "$activation_id" ] || [ -z "$activation_code" ]; then
  die "expected the activation id and code on stdin (two lines)" 2
fi
case "$activation_id" in
  *[!A-Za-z0-9-]*) die "malformed activation id on stdin" 2 ;;
esac

# Proxy: for this script and the installer's downloads, systemd drop-ins for the services,
# and (below) ecs.config for the ECS agent. NO_PROXY keeps metadata endpoints direct.
export HTTP_PROXY=http://proxy.corp.example:3128/%7Eedge HTTPS_PROXY=http://proxy.corp.example:3128/%7Eedge
export NO_PROXY=localhost,127.0.0.1,169.254.169.254,169.254.170.2,/var/run/docker.sock,10.0.0.0/8,.corp.example
export http_proxy="$HTTP_PROXY" https_proxy="$HTTPS_PROXY" no_proxy="$NO_PROXY"
# The URL may carry a password: the units read it from a root-only EnvironmentFile, since
# `systemctl show` reveals Environment= lines to every user.
mkdir -p -m 0700 -- "$ROOT"/etc/anywhere
printf '%s\n' HTTP_PROXY=http://proxy.corp.example:3128/%7Eedge HTTPS_PROXY=http://proxy.corp.example:3128/%7Eedge NO_PROXY=localhost,127.0.0.1,169.254.169.254,169.254.170.2,/var/run/docker.sock,10.0.0.0/8,.corp.example > "$work/proxy.env"
install -m 0600 -- "$work/proxy.env" "$ROOT"/etc/anywhere/proxy.env
printf '%s\n' '# Written by anywhere: proxy for ECS Anywhere services.' '[Service]' EnvironmentFile=/etc/anywhere/proxy.env > "$work/http-proxy.conf"
for unit in amazon-ssm-agent snap.amazon-ssm-agent.amazon-ssm-agent docker ecs; do
  mkdir -p -- "$ROOT/etc/systemd/system/$unit.service.d"
  install -m 0644 -- "$work/http-proxy.conf" "$ROOT/etc/systemd/system/$unit.service.d/http-proxy.conf"
done
if have_systemd; then
  systemctl daemon-reload
fi
log "proxy drop-ins written for amazon-ssm-agent, snap.amazon-ssm-agent.amazon-ssm-agent, docker, ecs"

# /etc/ecs/ecs.config must hold attributes, tags and proxy before the agent first starts:
# custom attributes are sent only at first registration. Keys we own are replaced; the
# rest of the file is kept. (The installer appends ECS_CLUSTER too; same value.)
cfg="$ROOT/etc/ecs/ecs.config"
mkdir -p -- "$ROOT/etc/ecs"
if [ -f "$cfg" ]; then
  grep -v -E '^(ECS_CLUSTER|HTTP_PROXY|HTTPS_PROXY|NO_PROXY|ECS_INSTANCE_ATTRIBUTES|ECS_CONTAINER_INSTANCE_TAGS)=' -- "$cfg" > "$work/ecs.config" || true
else
  : > "$work/ecs.config"
fi
printf '%s\n' ECS_CLUSTER=ml-prod HTTP_PROXY=http://proxy.corp.example:3128/%7Eedge HTTPS_PROXY=http://proxy.corp.example:3128/%7Eedge NO_PROXY=localhost,127.0.0.1,169.254.169.254,169.254.170.2,/var/run/docker.sock,10.0.0.0/8,.corp.example 'ECS_INSTANCE_ATTRIBUTES={"gpu":"true","rack":"r3","site/floor":"2"}' 'ECS_CONTAINER_INSTANCE_TAGS={"cost-center":"4711","note":"it'"'"'s \"quoted\"","team":"ml-platform"}' >> "$work/ecs.config"
# 0600: it may hold the proxy URL's password (read by root only: ecs-init and the agent).
install -m 0600 -- "$work/ecs.config" "$cfg"
log "wrote $cfg"

installer="$work/ecs-anywhere-install.sh"
installer_url=https://mirror.corp.example/ecs/ecs-anywhere-install-2026.01.sh
log "downloading the installer from $installer_url"
curl -fsSL --retry 5 --retry-delay 2 --retry-connrefused --connect-timeout 20 --max-time 300 \
  -o "$installer" -- "$installer_url" \
  || die "cannot download the installer from $installer_url" 3
if ! printf '%s  %s\n' 0d5b1e9a4c7f2e8b3a6d9c0f1e2b5a8d7c4f3e6b9a2d5c8f1e4b7a0d3c6f9e2b "$installer" | sha256sum -c --quiet -; then
  die "installer checksum mismatch: expected sha256 0d5b1e9a4c7f2e8b3a6d9c0f1e2b5a8d7c4f3e6b9a2d5c8f1e4b7a0d3c6f9e2b" 3
fi
log "installer sha256 verified"

# Defence in depth: whatever the installer prints passes through with the code masked.
# awk reads the code from its environment (readable by root only), not from argv. It exits 3
# when the installer reported a full filesystem, so the failure can say so.
mask() {
  if command -v awk >/dev/null 2>&1; then
    awk 'BEGIN { c = ENVIRON["ANYWHERE_MASK"]; n = length(c) }
      /No space left on device/ { full = 1 }
      { s = $0; out = ""
        while (n > 0 && (i = index(s, c)) > 0) { out = out substr(s, 1, i - 1) "***"; s = substr(s, i + n) }
        print out s; fflush() }
      END { if (full) exit 3 }'
  else
    cat
  fi
}

# With ecs-init already installed (a re-registration, a host wiped without removing its
# packages) the installer skips writing the agent's config and starting ecs, then waits
# for the agent and fails. So: tell it not to start anything, write that config here, and
# start the agents below.
no_start=()
if [ -x "$ROOT/usr/libexec/amazon-ecs-init" ]; then
  no_start=(--no-start)
  agent_cfg="$ROOT/var/lib/ecs/ecs.config"
  mkdir -p -- "$ROOT/var/lib/ecs"
  if [ -f "$agent_cfg" ]; then
    grep -v -E '^(AWS_DEFAULT_REGION|ECS_EXTERNAL|ECS_BACKEND_HOST|ECS_ENABLE_GPU_SUPPORT)=' -- "$agent_cfg" > "$work/agent.config" || true
  else
    : > "$work/agent.config"
  fi
  printf '%s\n' AWS_DEFAULT_REGION=eu-central-1 ECS_EXTERNAL=true ECS_BACKEND_HOST=https://ecs.eu-central-1.amazonaws.com ECS_ENABLE_GPU_SUPPORT=true >> "$work/agent.config"
  install -m 0644 -- "$work/agent.config" "$agent_cfg"
  log "ecs-init already installed: wrote $agent_cfg; the agents are started after the installer"
fi

# A registration kept from an install that stopped early (power lost, connection dropped)
# may have an SSM agent that was never enabled: the installer keeps the registration and
# starts no agent for it, and the ECS agent waits for the credentials only that agent shares.
if have_systemd && [ -s "$ROOT/var/lib/amazon/ssm/registration" ]; then
  for unit in amazon-ssm-agent snap.amazon-ssm-agent.amazon-ssm-agent; do
    if systemctl cat -- "$unit.service" >/dev/null 2>&1 && ! systemctl is-active --quiet -- "$unit.service"; then
      log "the host keeps its registration: starting $unit"
      systemctl enable --now -- "$unit.service" >/dev/null 2>&1 || warn "could not start $unit"
    fi
  done
fi

log "running the ECS Anywhere installer"
set +e
bash "$installer" --region eu-central-1 --cluster ml-prod --docker-install-source none --enable-gpu --ecs-endpoint https://ecs.eu-central-1.amazonaws.com ${no_start[@]+"${no_start[@]}"} \
  --activation-id "$activation_id" --activation-code "$activation_code" </dev/null 2>&1 \
  | ANYWHERE_MASK="$activation_code" mask
codes=("${PIPESTATUS[@]}")
set -e
activation_code=""
status="${codes[0]}"
if [ "$status" -ne 0 ] && [ "${codes[1]}" = 3 ]; then
  die "the ECS Anywhere installer exited $status: a filesystem on this host is full (No space left on device)" "$status"
elif [ "$status" -ne 0 ]; then
  die "the ECS Anywhere installer exited $status" "$status"
fi

# When ecs-init was already installed (re-registration) the installer returns early and
# starts nothing: make sure the agents run.
if have_systemd; then
  systemctl enable ecs.service >/dev/null 2>&1 || true
  for unit in amazon-ssm-agent snap.amazon-ssm-agent.amazon-ssm-agent ecs; do
    if systemctl cat -- "$unit.service" >/dev/null 2>&1 && ! systemctl is-active --quiet -- "$unit.service"; then
      systemctl start -- "$unit.service" || warn "could not start $unit"
    fi
  done
fi
log "install finished for $host_name"
