# shellcheck shell=bash
# Shared helpers for the scripts in this directory. Source it, don't run it:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Sourcing also settles the defaults every script must agree on (cache dir,
# target dir, store URLs), so `up`, `test` and `services` can never disagree
# about where the binary or the stores are.

# Work from the repository root, found from this file rather than from $PWD,
# so cargo and relative paths behave the same wherever a script is called from.
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit

# One cache dir for everything that should survive between runs (store
# binaries, build output, pid and log files) but never belongs in git.
export ORDERLY_CACHE_DIR="${ORDERLY_CACHE_DIR:-$HOME/.cache/orderly}"
mkdir -p "$ORDERLY_CACHE_DIR"

# Shared by `up` and `test`, so repeated and CI runs reuse one build instead of
# compiling the dependency tree again per entry point.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ORDERLY_CACHE_DIR/target}"

# Same names and defaults as the binary's settings, so the scripts talk to
# exactly the stores the service will.
export ORDERLY_HTTP_ADDR="${ORDERLY_HTTP_ADDR:-127.0.0.1:8080}"
export ORDERLY_DATABASE_URL="${ORDERLY_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/orderly}"
export ORDERLY_REDIS_URL="${ORDERLY_REDIS_URL:-redis://127.0.0.1:6379}"
export ORDERLY_MONGODB_URL="${ORDERLY_MONGODB_URL:-mongodb://127.0.0.1:27017}"
export ORDERLY_AMQP_URL="${ORDERLY_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"

# Where `scripts/up` keeps the server it started, so `scripts/down` (and the
# next `up`) can find it. The pattern guards against a reused pid.
# shellcheck disable=SC2034 # used by the scripts that source this file
{
  ORDERLY_RUN_PID_FILE="$ORDERLY_CACHE_DIR/orderly.pid"
  ORDERLY_RUN_LOG_FILE="$ORDERLY_CACHE_DIR/orderly.log"
  ORDERLY_RUN_PATTERN="orderly run"
}

# --- logging -----------------------------------------------------------------
# Progress goes to stderr so stdout stays clean for the one-line-per-store
# summaries and anything a caller may want to parse.

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# --- ports -------------------------------------------------------------------

# port_open HOST PORT: true when something accepts a TCP connection.
# bash's /dev/tcp needs no extra tools; `timeout` keeps a filtered port from
# hanging us for the kernel's full connect timeout.
port_open() {
  local host="$1" port="$2"
  # shellcheck disable=SC2016 # $1/$2 are meant for the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
}

# wait_for_port HOST PORT TIMEOUT_SECONDS [PID]: poll until the port answers.
# With PID, give up early when that process has died: waiting out the whole
# timeout for a server that already crashed only hides the real error.
wait_for_port() {
  local host="$1" port="$2" timeout_s="$3" pid="${4:-}"
  local deadline=$((SECONDS + timeout_s))
  until port_open "$host" "$port"; do
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      return 1
    fi
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}

# --- packages ----------------------------------------------------------------

# `apt-get update` is slow and only needed once per run, and only when
# something is actually missing.
_ORDERLY_APT_UPDATED=false

# ensure_apt_package PACKAGE: install it unless dpkg says it is already there.
# Returns 0 when it had to install, 1 when it was present already, so callers
# can tell a fresh install (which may need first-time setup) from an old one.
# Callers use it in `if`, where bash switches off `set -e` for the whole
# function, hence the explicit `|| die` on every step that can fail.
ensure_apt_package() {
  local pkg="$1"
  if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    return 1
  fi
  if [[ "$_ORDERLY_APT_UPDATED" != true ]]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
    _ORDERLY_APT_UPDATED=true
  fi
  log "apt-get install $pkg"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >&2 ||
    die "apt-get install $pkg failed"
  return 0
}

# --- processes we start ourselves --------------------------------------------

# pid_alive PIDFILE PATTERN: print the pid and succeed when the pid file names
# a live process whose command line contains PATTERN. The pattern check
# matters: after a reboot or a crash the pid may belong to an unrelated
# process that we must not wait for or signal.
pid_alive() {
  local pidfile="$1" pattern="$2" pid cmdline
  [[ -s "$pidfile" ]] || return 1
  pid="$(<"$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  # stderr first: a vanished pid must fail quietly.
  cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
  [[ "$cmdline" == *"$pattern"* ]] || return 1
  printf '%s\n' "$pid"
}

# stop_pidfile PIDFILE LABEL PATTERN [GRACE_SECONDS]: SIGTERM the process,
# give it time to shut down gracefully (finish requests, ack in-flight
# messages), then SIGKILL. Prints what it did; always removes the pid file.
stop_pidfile() {
  local pidfile="$1" label="$2" pattern="$3" grace="${4:-30}" pid
  if ! pid="$(pid_alive "$pidfile" "$pattern")"; then
    rm -f "$pidfile"
    echo "$label: not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + grace))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    warn "$label (pid $pid) still running ${grace}s after SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  echo "$label: stopped (pid $pid)"
}

# start_background PIDFILE LOGFILE COMMAND...: run COMMAND detached from this
# shell, log to LOGFILE, record its pid. setsid puts it in its own session so
# a CI runner or terminal killing our process group does not take it down too.
# (A non-interactive script's children are never group leaders, so setsid
# execs in place and $! is the server's real pid.)
start_background() {
  local pidfile="$1" logfile="$2"
  shift 2
  mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
  setsid nohup "$@" >>"$logfile" 2>&1 </dev/null &
  echo "$!" >"$pidfile"
}

# --- URLs --------------------------------------------------------------------

# url_host_port URL DEFAULT_PORT: print "host port" for URLs shaped like
# scheme://[user[:pass]@]host[:port][/...]. Good enough for the loopback URLs
# these scripts manage; IPv6 literals are not supported.
url_host_port() {
  local url="$1" default_port="$2" rest hostport
  rest="${url#*://}"
  rest="${rest%%/*}"
  hostport="${rest##*@}"
  if [[ "$hostport" == *:* ]]; then
    printf '%s %s\n' "${hostport%%:*}" "${hostport##*:}"
  else
    printf '%s %s\n' "$hostport" "$default_port"
  fi
}

# --- prerequisites -------------------------------------------------------------
# Checked before any work, so a missing or old tool is one line saying what to
# do instead of an error deep inside a build.

# version_at_least FOUND WANTED: true when dotted version FOUND >= WANTED.
version_at_least() {
  [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" == "$2" ]]
}

# The oldest Rust that builds orderly: Cargo.toml's rust-version (edition 2024
# and let chains, stable since 1.88). Read from there so the two never disagree.
rust_version_wanted() {
  sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml
}

# require_rust [COMPONENT...]: cargo and rustc at least rust-version, and each
# named cargo subcommand (fmt, clippy) installed.
require_rust() {
  local wanted found component
  wanted="$(rust_version_wanted)"
  command -v cargo >/dev/null && command -v rustc >/dev/null ||
    die "orderly needs Rust $wanted or later (cargo and rustc), and neither is on PATH: install it with rustup (\`rustup toolchain install stable\`)"
  found="$(rustc --version | awk '{ print $2 }')"
  version_at_least "${found%%-*}" "$wanted" ||
    die "orderly needs Rust $wanted or later (Cargo.toml's rust-version) and rustc is $found: run \`rustup update stable\`"
  for component in "$@"; do
    cargo "$component" --version >/dev/null 2>&1 ||
      die "cargo $component is missing: run \`rustup component add ${component/fmt/rustfmt}\`"
  done
}

# The oldest kubectl whose built-in kustomize (v5) renders deploy/k8s's
# components; Debian's kubernetes-client (1.20) is older.
KUBECTL_WANTED=1.27

# kubectl_problem: prints what is wrong with this machine's kubectl for
# scripts/check-deploy, or nothing when it will do.
kubectl_problem() {
  local found
  if ! command -v kubectl >/dev/null; then
    echo "scripts/check-deploy needs kubectl $KUBECTL_WANTED or later (for \`kubectl kustomize\`), and none is on PATH: install a current kubectl (Debian's kubernetes-client is too old)"
    return
  fi
  found="$(kubectl version --client -o json 2>/dev/null |
    python3 -c 'import json,sys; v=json.load(sys.stdin)["clientVersion"]; print(v["major"] + "." + v["minor"].rstrip("+"))' 2>/dev/null || true)"
  if [[ -z "$found" ]] || ! version_at_least "$found" "$KUBECTL_WANTED"; then
    echo "scripts/check-deploy needs kubectl $KUBECTL_WANTED or later (for kustomize v5), and $(command -v kubectl) is ${found:-of an unknown version}: install a current kubectl ahead of it on PATH"
  fi
}
