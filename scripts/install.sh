#!/usr/bin/env bash
# Idempotent install of everything the project needs on a Debian 12 machine (run as root).
#   - Debian packages: bcc, Mininet, iproute2, nftables, tcpdump, kernel headers, ...
#   - the kernel-header links bcc needs when the running kernel ships none
#   - .venv/ at the repo root (system site packages, so bcc and Mininet are visible) with the PyPI deps
# Safe to run twice; fast when nothing is missing (a stamp file records the last successful run).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

APT_PKGS=(python3-bpfcc bpfcc-tools libbpf-dev mininet iproute2 nftables iptables tcpdump ethtool
          iputils-ping linux-headers-amd64 python3-venv python3-dev gcc make procps psmisc
          libnetfilter-queue-dev strace)

log() { printf '[install] %s\n' "$*"; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt packages missing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# bcc needs /lib/modules/$(uname -r)/{build,source}; this kernel ships no headers, so link Debian's.
KREL=$(uname -r)
if [ ! -e "/lib/modules/$KREL/build/include" ]; then
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1 || true)
  common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1 || true)
  if [ -n "$hdr" ] && [ -n "$common" ]; then
    log "linking kernel headers $hdr for $KREL"
    as_root mkdir -p "/lib/modules/$KREL"
    as_root ln -sfn "$hdr" "/lib/modules/$KREL/build"
    as_root ln -sfn "$common" "/lib/modules/$KREL/source"
  else
    log "warning: no kernel headers found under /usr/src; BPF features will be unavailable"
  fi
fi

# Bridged traffic must not pass the root namespace's iptables (our partitions use their own nft table).
if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
  echo 0 | as_root tee /proc/sys/net/bridge/bridge-nf-call-iptables >/dev/null || true
fi

REQ_HASH=$(sha256sum pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)
STAMP=.venv/.installed-$REQ_HASH
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
if [ ! -e "$STAMP" ]; then
  log "installing Python dependencies"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev,distributed,parquet]"
  rm -f .venv/.installed-*
  touch "$STAMP"
fi
log "ok ($ROOT/.venv)"
