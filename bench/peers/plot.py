"""Draws bench/peers' figures with matplotlib: <prefix>-rps.png (req/s per peer per framework,
miss path and hit path), <prefix>-p99.png (p99, same layout) and <prefix>-rss.png (RSS under
load). Bars are medians, whiskers the min–max over the runs.
Usage: bench/.venv/bin/python bench/peers/plot.py bench/out/peers.json <prefix>"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

doc = json.load(open(sys.argv[1]))
prefix = sys.argv[2]
meta, results, labels = doc["meta"], doc["results"], doc["labels"]
fws = list(results)
MISS = ["node-miss", "node-cluster", "deno", "bun", "workerd"]
HIT = ["node-hit", "node-hit-redis", "hello", "varnish", "nginx"]
SHORT = {"node-miss": "this node (miss path)", "node-cluster": "Node cluster", "deno": "Deno", "bun": "Bun",
         "workerd": "workerd", "node-hit": "this node (hit, memory)", "node-hit-redis": "this node (hit, Redis)",
         "hello": "axum hello-world", "varnish": "Varnish", "nginx": "nginx proxy_cache"}
sub = f"wrk -t{meta['threads']} -c{meta['connections']}, {meta['runs']} x {meta['duration']} s, {meta['date']}"


def bars(ax, keys, metric, lo, hi, ylabel, title, scale=1.0):
    width = 0.8 / len(keys)
    for i, k in enumerate(keys):
        xs, ys, err_lo, err_hi = [], [], [], []
        for j, fw in enumerate(fws):
            s = results[fw]["stats"][k]
            if s.get(metric) is None:
                continue
            xs.append(j + (i - (len(keys) - 1) / 2) * width)
            ys.append(s[metric] / scale)
            err_lo.append((s[metric] - s[lo]) / scale if lo else 0)
            err_hi.append((s[hi] - s[metric]) / scale if hi else 0)
        ax.bar(xs, ys, width, label=SHORT[k], yerr=[err_lo, err_hi] if lo else None, capsize=3,
               edgecolor="black" if k.startswith("node-") and k != "node-cluster" else None)
    ax.set_xticks(range(len(fws)), fws)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)


for metric, lo, hi, ylabel, name, scale in [("rps", "rps_min", "rps_max", "requests/s", "rps", 1.0),
                                           ("p99", "p99_min", "p99_max", "p99 latency (ms)", "p99", 1.0)]:
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    bars(a, MISS, metric, lo, hi, ylabel, f"miss path: /search?q=<unique>, every request renders")
    bars(b, HIT, metric, lo, hi, ylabel, "hit path: /products/7")
    fig.suptitle(f"bench/peers: {ylabel} ({sub})")
    fig.tight_layout()
    fig.savefig(f"{prefix}-{name}.png", dpi=100)
    plt.close(fig)

fig, ax = plt.subplots(figsize=(12, 4.5))
bars(ax, MISS + HIT, "rss", None, None, "RSS under load (MiB, all processes)", "RSS of each server under load")
fig.suptitle(f"bench/peers: RSS ({sub})")
fig.tight_layout()
fig.savefig(f"{prefix}-rss.png", dpi=100)
plt.close(fig)
