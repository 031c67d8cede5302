#!/usr/bin/env bash
# Installs the official ACS Identity SDKs that crates/acs-emulator/tests/sdk_compat.rs runs against the emulator:
#   Python: azure-communication-identity, azure-communication-chat (the consumer example's
#           credential) and azure-communication-administration 1.0.0b4
#           (tests/sdk/requirements.txt, pinned and hash-checked) into  .cache/sdk/venv
#   JS:     @azure/communication-identity and @azure/communication-common (its EntraTokenCredential;
#           tests/sdk/package*.json)  into  .cache/sdk/js/node_modules
#
# Idempotent: each half writes a marker holding a hash of its inputs once it is complete, and a
# later run whose inputs hash the same does nothing. Safe to run concurrently (flock). Only pip and
# npm are used (PyPI / npm registry, or their local caches); nothing else is downloaded.
#
# Environment: SDK_CACHE_DIR overrides the install dir (default <repo>/.cache/sdk);
#              PYTHON (default python3) and NPM (default npm) pick the tools.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${SDK_CACHE_DIR:-$root/.cache/sdk}"
python="${PYTHON:-python3}"
npm="${NPM:-npm}"

log() { printf 'sdk setup: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v "$python" >/dev/null || die "$python not found (Python >= 3.8 is needed for the SDK test)"
command -v node >/dev/null || die "node not found (Node >= 20 is needed for the SDK test)"
command -v "$npm" >/dev/null || die "$npm not found"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "node $(node --version) is too old: @azure/communication-identity 1.3.1 needs >= 20"

mkdir -p "$cache"
exec 9>"$cache/.setup.lock"
flock -w 900 9 || die "timed out waiting for another setup.sh holding $cache/.setup.lock"

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# --- Python -----------------------------------------------------------------------------------
venv="$cache/venv"
py_hash="$(
  {
    hash_of "$here/requirements.txt"
    "$python" -c 'import sys; print(sys.version)'
  } | sha256sum | cut -d' ' -f1
)"
if [ -f "$venv/.sdk-installed" ] && [ "$(cat "$venv/.sdk-installed")" = "$py_hash" ] \
  && [ -x "$venv/bin/python" ]; then
  log "python SDK already installed in $venv"
else
  log "installing python SDK into $venv"
  rm -rf "$venv"
  if ! "$python" -m venv "$venv"; then
    # Debian's system python needs the python3-venv package for ensurepip.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "python3 -m venv failed; installing python3-venv with apt-get"
      rm -rf "$venv"
      apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >&2
      "$python" -m venv "$venv"
    else
      die "$python -m venv failed (install python3-venv)"
    fi
  fi
  # --no-deps: requirements.txt pins the whole dependency set; pip check proves it is complete.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --require-virtualenv -r "$here/requirements.txt" >&2
  "$venv/bin/python" -m pip check >&2
  "$venv/bin/python" -c 'import azure.communication.identity, azure.communication.administration, azure.communication.chat' \
    || die "azure.communication.identity, .administration or .chat does not import after install"
  printf '%s\n' "$py_hash" >"$venv/.sdk-installed"
fi

# --- JavaScript -------------------------------------------------------------------------------
js="$cache/js"
js_hash="$(
  {
    hash_of "$here/package.json" "$here/package-lock.json"
    node --version
  } | sha256sum | cut -d' ' -f1
)"
if [ -f "$js/.sdk-installed" ] && [ "$(cat "$js/.sdk-installed")" = "$js_hash" ] \
  && [ -d "$js/node_modules/@azure/communication-identity" ]; then
  log "JS SDK already installed in $js"
else
  log "installing JS SDK into $js"
  rm -rf "$js"
  mkdir -p "$js"
  cp "$here/package.json" "$here/package-lock.json" "$js/"
  # npm ci installs exactly the lockfile (integrity-checked) and fails if package.json disagrees.
  (cd "$js" && "$npm" ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
  node -e 'require(process.argv[1] + "/node_modules/@azure/communication-identity")' "$js" \
    || die "@azure/communication-identity does not load after install"
  printf '%s\n' "$js_hash" >"$js/.sdk-installed"
fi

log "ready: python=$venv/bin/python node_modules=$js/node_modules"
