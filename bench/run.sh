#!/usr/bin/env bash
# Runs the render benchmark (release build) after building the fixtures; prints a Markdown
# table for bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup
. scripts/env.sh
cargo bench --locked --bench render
cargo bench --locked --bench cache
