#!/usr/bin/env bash
# What a GPU instance runs at boot: install the worker if missing, rotate the model log, start the
# model server and the worker, supervise both, and tell the engine about every failure (PROTOCOL §7).
# Safe to run again on the same machine (the second boot of a stopped worker, or a re-run while a
# previous run is still up: that one is stopped first).
#
# Environment (besides the worker's own, PROTOCOL §8 and the README's configuration reference):
#   WORKSPACE_DIR    the instance's workspace (default /workspace); pid files and the default log go here
#   NODEWORKER_DIR   where the worker lives (default: this script's checkout if it is one,
#                    else $WORKSPACE_DIR/nodeworker)
#   NODEWORKER_REPO  git url (or local path) to install from when NODEWORKER_DIR has no build
#   NODEWORKER_REF   branch or tag to install (default main)
#   MODEL_CMD        the model server's command line (default: nodeworker's model-sim, for local use)
#   MODEL_PORT       model-sim's port when MODEL_CMD is unset (default 8000)
#   MODEL_SIM_ARGS   extra model-sim flags when MODEL_CMD is unset (e.g. "--load-seconds 1")
#   MODEL_SIM_FLAVOR model-sim's flavor (default: from BACKEND: tgi, comfyui, else openai)
#   MODEL_LOG        the model's log file (default $WORKSPACE_DIR/model.log)
#   BACKEND          the handler to run (default openai)
#   USE_SSL          true: the worker serves HTTPS from SSL_CERT_PATH / SSL_KEY_PATH
#                    (default /etc/instance.crt, /etc/instance.key)
set -euo pipefail

WORKSPACE_DIR="${WORKSPACE_DIR:-/workspace}"
MODEL_LOG="${MODEL_LOG:-$WORKSPACE_DIR/model.log}"
WORKER_PORT="${WORKER_PORT:-3000}"
BACKEND="${BACKEND:-openai}"
NODEWORKER_REF="${NODEWORKER_REF:-main}"
PUBLIC_IPADDR="${PUBLIC_IPADDR:-127.0.0.1}"
port_var="VAST_TCP_PORT_${WORKER_PORT}"
PUBLIC_PORT="${!port_var:-$WORKER_PORT}"
if [ "${USE_SSL:-false}" = "true" ]; then scheme=https; else scheme=http; fi
WORKER_URL="${scheme}://${PUBLIC_IPADDR}:${PUBLIC_PORT}"

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -z "${NODEWORKER_DIR:-}" ]; then
  if [ -f "$script_dir/package.json" ] && grep -q '"name": "nodeworker"' "$script_dir/package.json"; then
    NODEWORKER_DIR="$script_dir"
  else
    NODEWORKER_DIR="$WORKSPACE_DIR/nodeworker"
  fi
fi

log() { printf '%s on_start: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

# The version the engine sees: the installed worker's, once there is one.
worker_version() {
  local v=""
  [ -f "$NODEWORKER_DIR/package.json" ] && v=$(sed -n 's/^  "version": "\([^"]*\)".*/\1/p' "$NODEWORKER_DIR/package.json" | head -n 1)
  printf '%s' "${v:-on_start}"
}

json_escape() {
  local s="$1"
  s="${s//\\/\\\\}"; s="${s//\"/\\\"}"; s="${s//$'\n'/\\n}"; s="${s//$'\r'/\\r}"; s="${s//$'\t'/\\t}"
  printf '%s' "$s" | tr -d '\000-\010\013\014\016-\037'
}

# POST a JSON body to one URL (curl, or node when there is no curl): up to 3 tries, 2 s apart, 10 s
# each, until a 2xx (as the worker's own reports, PROTOCOL §4). Never fails.
post_json() {
  local url="$1" body="$2" try
  for try in 1 2 3; do
    if command -v curl > /dev/null 2>&1; then
      curl -sSf -m 10 -o /dev/null -X POST -H 'content-type: application/json' --data "$body" "$url" 2> /dev/null && return 0
    elif command -v node > /dev/null 2>&1; then
      node -e 'fetch(process.argv[1], {method: "POST", headers: {"content-type": "application/json"}, body: process.argv[2], signal: AbortSignal.timeout(10000)}).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$url" "$body" 2> /dev/null && return 0
    else
      return 0
    fi
    [ "$try" = 3 ] || sleep 2
  done
  return 0
}

# Tell every engine address about a failure: {id, mtoken, version, error_msg, url}. Never fails.
report_error() {
  local msg="$1"
  log "error: $msg"
  [ -n "${REPORT_ADDR:-}" ] || return 0
  local id="${CONTAINER_ID:-0}"
  [[ "$id" =~ ^-?[0-9]+$ ]] || id=0
  local body
  body=$(printf '{"id": %s, "mtoken": "%s", "version": "%s", "error_msg": "%s", "url": "%s", "loadtime": 0, "max_perf": 0, "cur_load": 0, "additional_disk_usage": 0}' \
    "$id" "$(json_escape "${MASTER_TOKEN:-}")" "$(json_escape "$(worker_version)")" "$(json_escape "$msg")" "$WORKER_URL")
  local addr
  IFS=',' read -ra addrs <<< "$REPORT_ADDR"
  for addr in "${addrs[@]}"; do
    addr="${addr#"${addr%%[![:space:]]*}"}"; addr="${addr%"${addr##*[![:space:]]}"}"; addr="${addr%/}"
    [ -n "$addr" ] || continue
    post_json "$addr/worker_status/" "$body"
  done
}

current_step="starting"
on_err() { report_error "on_start.sh failed while ${current_step} (exit $1, line $2)"; }
trap 'on_err $? $LINENO' ERR

mkdir -p "$WORKSPACE_DIR"
supervisor_pid_file="$WORKSPACE_DIR/.on_start.pid"
model_pid_file="$WORKSPACE_DIR/.model.pid"
worker_pid_file="$WORKSPACE_DIR/.worker.pid"

# Wait up to $2 tenths of a second for process $1 to end.
wait_gone() {
  local i
  for i in $(seq 1 "$2"); do kill -0 "$1" 2> /dev/null || return 0; sleep 0.1; done
  return 1
}

# 0. A previous run on this machine that is still up: ask its supervisor to stop (it drains the
# worker, then stops the model), then stop whatever a killed supervisor left behind.
current_step="stopping a previous run"
if [ -f "$supervisor_pid_file" ]; then
  old=$(cat "$supervisor_pid_file" 2> /dev/null || true)
  if [ -n "$old" ] && [ "$old" != "$$" ] && kill -0 "$old" 2> /dev/null && grep -q on_start "/proc/$old/cmdline" 2> /dev/null; then
    log "stopping the previous on_start.sh (pid $old)"
    kill -TERM "$old" 2> /dev/null || true
    wait_gone "$old" 600 || kill -KILL "$old" 2> /dev/null || true
  fi
fi
for f in "$worker_pid_file" "$model_pid_file"; do
  if [ -f "$f" ]; then
    old=$(cat "$f" 2> /dev/null || true)
    if [ -n "$old" ] && kill -0 "$old" 2> /dev/null; then
      log "stopping process $old left by a previous run"
      kill -TERM -- "-$old" 2> /dev/null || kill -TERM "$old" 2> /dev/null || true
      wait_gone "$old" 100 || kill -KILL -- "-$old" 2> /dev/null || kill -KILL "$old" 2> /dev/null || true
    fi
    rm -f "$f"
  fi
done
echo "$$" > "$supervisor_pid_file"

# 1. Install the worker when it is not there yet.
if [ ! -f "$NODEWORKER_DIR/dist/cli.js" ]; then
  if [ ! -f "$NODEWORKER_DIR/package.json" ]; then
    current_step="cloning ${NODEWORKER_REPO:-<NODEWORKER_REPO unset>}@${NODEWORKER_REF}"
    if [ -z "${NODEWORKER_REPO:-}" ]; then
      report_error "install failed: nodeworker is not installed in $NODEWORKER_DIR and NODEWORKER_REPO is not set"
      exit 1
    fi
    log "$current_step"
    if ! out=$(git clone --depth 1 --branch "$NODEWORKER_REF" "$NODEWORKER_REPO" "$NODEWORKER_DIR" 2>&1); then
      report_error "install failed: git clone $NODEWORKER_REPO@$NODEWORKER_REF: $(tail -n 3 <<< "$out")"
      exit 1
    fi
  fi
  # npm ci builds through the package's prepare script; the explicit build is only for an npm
  # configured with ignore-scripts.
  current_step="building nodeworker (npm ci)"
  log "$current_step"
  if ! out=$(cd "$NODEWORKER_DIR" && npm ci --no-audit --no-fund 2>&1); then
    report_error "install failed: npm ci in $NODEWORKER_DIR: $(tail -n 5 <<< "$out")"
    exit 1
  fi
  if [ ! -f "$NODEWORKER_DIR/dist/cli.js" ] && ! out=$(cd "$NODEWORKER_DIR" && npm run build 2>&1); then
    report_error "install failed: npm run build in $NODEWORKER_DIR: $(tail -n 5 <<< "$out")"
    exit 1
  fi
  if [ ! -f "$NODEWORKER_DIR/dist/cli.js" ]; then
    report_error "install failed: the build in $NODEWORKER_DIR produced no dist/cli.js"
    exit 1
  fi
fi

# 2. Rotate an existing model log, so readiness is read from this boot's lines only.
current_step="rotating $MODEL_LOG"
mkdir -p "$(dirname "$MODEL_LOG")"
if [ -f "$MODEL_LOG" ]; then mv -f "$MODEL_LOG" "$MODEL_LOG.old"; fi
: > "$MODEL_LOG"

# 3. The model server, its output into MODEL_LOG, in its own process group (stopped as a whole).
current_step="starting the model server"
if [ -z "${MODEL_CMD:-}" ]; then
  case "$BACKEND" in
    tgi) flavor=tgi ;;
    comfyui*) flavor=comfyui ;;
    *) flavor=openai ;;
  esac
  MODEL_CMD="node '$NODEWORKER_DIR/dist/cli.js' model-sim --flavor ${MODEL_SIM_FLAVOR:-$flavor} --port ${MODEL_PORT:-8000} ${MODEL_SIM_ARGS:-}"
  export MODEL_SERVER_URL="${MODEL_SERVER_URL:-http://127.0.0.1:${MODEL_PORT:-8000}}"
fi
log "model: $MODEL_CMD"
setsid bash -c "exec $MODEL_CMD" >> "$MODEL_LOG" 2>&1 < /dev/null &
model_pid=$!
echo "$model_pid" > "$model_pid_file"

# 4. The worker, with the environment of PROTOCOL §8.
current_step="starting the worker"
export WORKSPACE_DIR MODEL_LOG WORKER_PORT BACKEND PUBLIC_IPADDR
setsid node "$NODEWORKER_DIR/dist/cli.js" worker --handler "$BACKEND" < /dev/null &
worker_pid=$!
echo "$worker_pid" > "$worker_pid_file"
log "model pid $model_pid, worker pid $worker_pid, worker url $WORKER_URL"

cleanup_pid_files() {
  rm -f "$model_pid_file" "$worker_pid_file"
  if [ "$(cat "$supervisor_pid_file" 2> /dev/null || true)" = "$$" ]; then rm -f "$supervisor_pid_file"; fi
}

stopping=0
stop_all() {
  stopping=1
  log "stopping: draining the worker, then the model"
  kill -TERM "$worker_pid" 2> /dev/null || true
  wait "$worker_pid" 2> /dev/null || true
  kill -TERM -- "-$model_pid" 2> /dev/null || true
  wait_gone "$model_pid" 100 || kill -KILL -- "-$model_pid" 2> /dev/null || true
  cleanup_pid_files
  exit 0
}
trap stop_all TERM INT
trap - ERR
set +e

# 5. Supervise: a process that ends is a failure the engine must hear about.
model_alive=1
while :; do
  if [ "$model_alive" = 1 ]; then wait -n "$model_pid" "$worker_pid" 2> /dev/null; else wait "$worker_pid" 2> /dev/null; fi
  [ "$stopping" = 1 ] && break
  if [ "$model_alive" = 1 ] && ! kill -0 "$model_pid" 2> /dev/null; then
    wait "$model_pid" 2> /dev/null; code=$?
    model_alive=0
    msg="model server exited with code $code: $(tail -n 3 "$MODEL_LOG" 2> /dev/null | tr '\n' ' ' | cut -c1-600)"
    report_error "$msg"
    # The worker tails this log: the marker makes it errored, so its own reports carry the error
    # from now on instead of "still loading" (SUPERVISOR_ERROR_MARKER in src/worker/worker.ts).
    printf '[nodeworker on_start] ERROR: %s\n' "$msg" >> "$MODEL_LOG"
  fi
  if ! kill -0 "$worker_pid" 2> /dev/null; then
    wait "$worker_pid" 2> /dev/null; code=$?
    if [ "$code" != 0 ]; then report_error "worker exited with code $code"; fi
    kill -TERM -- "-$model_pid" 2> /dev/null || true
    cleanup_pid_files
    exit "$code"
  fi
done
