#!/usr/bin/env bash
# Removes ECS Anywhere registration state from host old-node-12 so that it can
# register afresh (or leave for good), rendered by anywhere. Safe to run on a clean host.
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

if have_systemd; then
  for unit in ecs amazon-ssm-agent snap.amazon-ssm-agent.amazon-ssm-agent; do
    # Exit status 5 means no such unit: nothing to stop.
    systemctl stop -- "$unit.service" >/dev/null 2>&1 || true
  done
fi

# Task containers run on without the ECS agent: a forced deregistration leaves them orphaned.
# Stop those the agent started (its label), only while Docker runs: a stopped Docker stopped
# them already, and a Docker CLI call would start it again through docker.socket.
if have_systemd && command -v docker >/dev/null 2>&1 \
    && systemctl is-active --quiet docker.service; then
  ids=$(docker ps -q --filter label=com.amazonaws.ecs.task-arn) || ids=""
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086  # container ids: hex, one a word
    set -- $ids
    if docker stop -- "$@" >/dev/null; then
      log "stopped $# ECS task container(s) left running: $*"
    else
      warn "could not stop every ECS task container ($*): see \`docker ps\`"
    fi
  fi
fi

# The ECS checkpoint (agent.db): while it exists the agent reuses the old container
# instance and cluster.
rm -rf -- "$ROOT/var/lib/ecs/data"
# The role credentials the SSM agent shared into root's default profile (it does so once
# registered: the vault or the registration file names an instance). Left behind they are an
# old identity's for the next ECS agent, and a credential chain that makes the next
# registration refuse the host. Only the three keys the agent writes go, and the [default]
# header once nothing else is in it: other profiles and settings stay (AWS's deregistration
# steps leave the file alone, and it may hold a user's own profiles). A file with nothing left
# is removed, and /root/.aws with it if then empty.
key="$ROOT/var/lib/amazon/ssm/Vault/Store/RegistrationKey"
reg="$ROOT/var/lib/amazon/ssm/registration"
creds="$ROOT/root/.aws/credentials"
if [ -f "$creds" ] && { grep -Eq '"instanceID"[[:space:]]*:[[:space:]]*"mi-' "$key" ||
    grep -Eq '"ManagedInstanceID"[[:space:]]*:[[:space:]]*"mi-' "$reg"; } 2>/dev/null; then
  kept="$(umask 077 && mktemp "$creds.XXXXXX")"
  awk '
    function flush() {
      if (sec != "default" || body ~ /[^[:space:]]/) printf "%s%s", head, body
      head = ""; body = ""
    }
    /^[[:space:]]*\[.*\][[:space:]]*$/ {
      flush(); head = $0 "\n"; sec = $0; gsub(/[][[:space:]]/, "", sec); next
    }
    sec == "default" && /^[[:space:]]*aws_(access_key_id|secret_access_key|session_token)[[:space:]]*=/ { next }
    { body = body $0 "\n" }
    END { flush() }
  ' "$creds" > "$kept"
  if grep -q '[^[:space:]]' "$kept"; then
    cat -- "$kept" > "$creds"
    rm -f -- "$kept"
  else
    rm -f -- "$kept" "$creds"
    rmdir -- "$ROOT/root/.aws" 2>/dev/null || true
  fi
  log "SSM agent's shared credentials removed from /root/.aws/credentials"
fi
# The SSM registration and Vault (which holds the instance's private key): while they exist
# the installer skips registration and the agent keeps the old mi- id.
rm -rf -- "$ROOT/var/lib/amazon/ssm/registration" "$ROOT/var/lib/amazon/ssm/Vault"
log "registration state removed"

rm -rf -- "$ROOT/etc/ecs" "$ROOT/var/lib/ecs" "$ROOT/var/lib/amazon/ssm"
rm -f -- "$ROOT"/etc/anywhere/proxy.env
rmdir -- "$ROOT"/etc/anywhere 2>/dev/null || true
for unit in amazon-ssm-agent snap.amazon-ssm-agent.amazon-ssm-agent docker ecs; do
  rm -f -- "$ROOT/etc/systemd/system/$unit.service.d/http-proxy.conf"
  rmdir -- "$ROOT/etc/systemd/system/$unit.service.d" 2>/dev/null || true
done
if have_systemd; then
  systemctl daemon-reload
fi
log "configuration removed"

rm -rf -- "$ROOT/var/log/ecs" "$ROOT/var/log/amazon/ssm"
log "logs removed"

if [ -z "$ROOT" ]; then
  if command -v docker >/dev/null 2>&1; then
    docker rm -f ecs-agent >/dev/null 2>&1 || true
  fi
  for pkg in amazon-ecs-init amazon-ssm-agent; do
    if command -v dpkg >/dev/null 2>&1 && dpkg -s "$pkg" >/dev/null 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get remove -y --purge "$pkg"
    elif command -v rpm >/dev/null 2>&1 && rpm -q "$pkg" >/dev/null 2>&1; then
      if command -v dnf >/dev/null 2>&1; then dnf remove -y "$pkg"; else yum remove -y "$pkg"; fi
    fi
  done
  if command -v snap >/dev/null 2>&1 && snap list amazon-ssm-agent >/dev/null 2>&1; then
    snap remove amazon-ssm-agent
  fi
  log "packages removed"
fi
