# Shared by bench/ab-miss and bench/profile-miss (sourced, from the repository root): the
# fixture Django origin on a free port, and one node serving a fixture app against it.
#   start_origin OUT              sets $oport; the origin logs to OUT/origin.log
#   start_node OUT BIN APP [FLAGS] sets $node (pid) and $nport once /search answers;
#                                  FLAGS go to MIZAN_V8_FLAGS
# Every process started is killed when the calling script exits.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

start_origin() {
  [ -x fixtures/origin/.venv/bin/python ] || { echo "$0: run scripts/setup first" >&2; exit 1; }
  oport=$(port)
  fixtures/origin/.venv/bin/python -u fixtures/origin/manage.py runserver "127.0.0.1:$oport" --noreload \
    >"$1/origin.log" 2>&1 &
  pids+=($!)
}

start_node() {
  local out=$1 bin=$2 app=$3 flags=${4:-}
  nport=$(port)
  MIZAN_V8_FLAGS="$flags" MIZAN_SECRET=mizan-example-secret-for-local-development-only "$bin" serve --dev \
    --manifest "fixtures/manifests/$app.json" --origin "http://127.0.0.1:$oport" \
    --listen "127.0.0.1:$nport" >"$out/node.log" 2>&1 &
  node=$!
  pids+=($node)
  for _ in $(seq 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$nport/search?q=ready" && return 0
    kill -0 "$node" 2>/dev/null || { echo "$0: $bin exited; see $out/node.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "$0: $bin did not answer within 30 s; see $out/node.log" >&2
  exit 1
}
