#!/usr/bin/env bash
# Soak benchmark: 100 000 mixed renders with RSS sampled (benches/soak.rs), drawn as
# bench/soak-rss.png with matplotlib (installed into bench/.venv).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup >/dev/null
. scripts/env.sh
cargo bench --locked --bench soak >bench/soak-rss.csv
[ -x bench/.venv/bin/python ] || python3 -m venv bench/.venv
bench/.venv/bin/python -m pip install --quiet --disable-pip-version-check matplotlib
bench/.venv/bin/python - <<'PY'
import csv
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = list(csv.DictReader(open("bench/soak-rss.csv")))
x = [int(r["renders"]) for r in rows]
y = [float(r["rss_mib"]) for r in rows]
fig, ax = plt.subplots(figsize=(8, 4))
ax.plot(x, y)
ax.axvline(10_000, color="grey", linestyle="--", label="end of warm-up")
ax.set_xlabel("renders (1.4 % throw, loop past the CPU budget or allocate past the heap limit)")
ax.set_ylabel("RSS (MiB)")
ax.set_ylim(bottom=0)
ax.set_title("mizan-render soak: RSS over 100 000 renders, 2 workers")
ax.legend()
fig.tight_layout()
fig.savefig("bench/soak-rss.png", dpi=100)
PY
echo "bench/soak-rss.png written"
