#!/usr/bin/env bash
# HTTP benchmark of the node with keep-alive (wrk), in one run, on this machine:
#   1. hit path: /products/7 served from the memory cache, side by side with a minimal axum
#      hello-world answering the same bytes (examples/hello.rs);
#   2. miss path: /search?q=<unique> renders a 300-row page per request (its data from the
#      data cache), side by side with the pool's pure render rate (cargo bench --bench render).
# Prints Markdown rows for bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup >/dev/null
. scripts/env.sh
command -v wrk >/dev/null || { sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo; $sudo apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked --bin mizan-render --example hello 2>/dev/null
out=bench/out; mkdir -p $out
duration=${DURATION:-10s}; connections=${CONNECTIONS:-32}; threads=2

fixtures/origin/.venv/bin/python -u fixtures/origin/manage.py runserver 127.0.0.1:18000 --noreload >$out/origin.log 2>&1 &
pids=($!)
trap 'kill ${pids[*]} 2>/dev/null' EXIT
MIZAN_SECRET=mizan-example-secret-for-local-development-only target/release/mizan-render serve --dev \
  --manifest fixtures/manifests/react.json --origin http://127.0.0.1:18000 --listen 127.0.0.1:18080 >$out/node.log 2>&1 &
pids+=($!)
until curl -sf http://127.0.0.1:18080/_mizan/health >/dev/null 2>&1; do sleep 0.2; done
until curl -sf -o $out/page.html http://127.0.0.1:18080/products/7; do sleep 0.2; done
curl -s -o $out/page.html http://127.0.0.1:18080/products/7
target/release/examples/hello 127.0.0.1:18090 $out/page.html &
pids+=($!)
until curl -sf -o /dev/null http://127.0.0.1:18090/; do sleep 0.2; done

rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
p99() { awk '/ 99%/ {print $2}' "$1"; }
wrk -t$threads -c$connections -d$duration --latency http://127.0.0.1:18090/ >$out/hello.txt
wrk -t$threads -c$connections -d$duration --latency http://127.0.0.1:18080/products/7 >$out/hit.txt
cat >$out/miss.lua <<'LUA'
local n = 0
local id = 0
setup = function(thread) id = id + 1; thread:set("prefix", id) end
request = function() n = n + 1; return wrk.format("GET", "/search?q=" .. prefix .. "-" .. n) end
LUA
wrk -t$threads -c$connections -d$duration --latency -s $out/miss.lua http://127.0.0.1:18080 >$out/miss.txt
hits=$(curl -s http://127.0.0.1:18080/_mizan/health)

bytes=$(wc -c <$out/page.html)
echo "wrk -t$threads -c$connections -d$duration, keep-alive, $bytes-byte page"
echo "| path | requests/s | p99 |"
echo "|---|---|---|"
echo "| axum hello-world, same body | $(rps $out/hello.txt) | $(p99 $out/hello.txt) |"
echo "| node hit path (/products/7, memory store) | $(rps $out/hit.txt) | $(p99 $out/hit.txt) |"
echo "| node miss path (/search?q=unique: key, data cache, render, store) | $(rps $out/miss.txt) | $(p99 $out/miss.txt) |"
echo "hit path = $(awk -v a="$(rps $out/hit.txt)" -v b="$(rps $out/hello.txt)" 'BEGIN {printf "%.0f", 100 * a / b}') % of hello-world"
echo "node counters after the run: $hits"
