"""bench/peers (issue 17): started by bench/peers/run, which installs and builds what this needs.

Per framework: starts the Django origin (once), this node twice (memory store; Redis store on a
redis-server of its own), the JavaScript peers (Node cluster, Deno, Bun, workerd) on the same
bundle through bench/peers/handler.mjs, the axum hello-world with the node's page as its body,
and Varnish and nginx proxy_cache in front of the Node peer. Checks every server's body length
against the node's, warms each up, then runs wrk on each in turn, N rounds, the order rotated
every round, sampling the RSS of each server's processes during its run. Writes the tables to
stdout and bench/out/peers.md, the raw figures to bench/out/peers.json, and PNGs.
"""

import argparse
import atexit
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
os.chdir(ROOT)
PEERS_DIR = "bench/peers"
OUT = "bench/out"
WORK = os.path.join(OUT, "peers")
BIN = "tests/parity/node_modules/.bin"
NODE_BIN = "target/release/mizan-render"
HELLO_BIN = "target/release/examples/hello"
SECRET = "mizan-example-secret-for-local-development-only"
COMPAT_DATE = "2026-08-04"
COMPAT_FLAGS = ["no_nodejs_compat", "no_nodejs_compat_v2"]
MISS_PATH = "/search"
NODE_STORE_MB = 64
HIT_PATH = "/products/7"

# (key, label, path kind) in table order
MISS_PEERS = [
    ("node-miss", "this node, miss path (render every request)"),
    ("node-cluster", "Node, node:cluster"),
    ("deno", "Deno, deno serve --parallel"),
    ("bun", "Bun, Bun.serve reusePort"),
    ("workerd", "workerd, --socket-fd"),
]
HIT_PEERS = [
    ("node-hit", "this node, hit path, memory store"),
    ("node-hit-redis", "this node, hit path, Redis store"),
    ("hello", "axum hello-world, same body (ceiling)"),
    ("varnish", "Varnish hit, Node peer behind"),
    ("nginx", "nginx proxy_cache hit, Node peer behind"),
]
JS_PEERS = ["node-cluster", "deno", "bun", "workerd"]


def log(*a):
    print("peers:", *a, file=sys.stderr, flush=True)


class Failure(Exception):
    pass


# ---------------------------------------------------------------- processes

CHILDREN = []  # Popen objects, each the leader of a process group of its own


def spawn(name, argv, env=None, pass_fds=(), cwd=None):
    logf = open(os.path.join(WORK, f"{name}.log"), "ab")
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=e,
                         pass_fds=pass_fds, cwd=cwd, start_new_session=True)
    p.peer_name = name
    CHILDREN.append(p)
    return p


def stop(procs):
    """SIGTERM each process group, SIGKILL what is left after 3 s."""
    procs = [p for p in procs if p.poll() is None]
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 3
    for p in procs:
        try:
            p.wait(max(0.05, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # also any child that outlived its leader
        except ProcessLookupError:
            pass
        try:
            p.wait(2)
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        if p in CHILDREN:
            CHILDREN.remove(p)


def stop_all():
    stop(list(CHILDREN))


def on_signal(signum, _frame):
    stop_all()
    sys.exit(128 + signum)


atexit.register(stop_all)
signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGHUP, on_signal)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(name, n=25):
    try:
        with open(os.path.join(WORK, f"{name}.log"), "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
    except OSError:
        return "(no log)"


def get(url, timeout=10, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def wait_ready(name, procs, probe, timeout=60):
    """Polls probe() until it returns truthy; fails if a process exits or the deadline passes."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise Failure(f"{name} exited with {p.returncode} before it was ready:\n{tail(p.peer_name)}")
        try:
            if probe():
                return
        except Exception as e:  # noqa: BLE001 (not ready yet)
            last = e
        time.sleep(0.1)
    raise Failure(f"{name} not ready after {timeout} s ({last}):\n{tail(procs[0].peer_name)}")


def http_ok(url):
    return lambda: get(url, timeout=5)[0] == 200


def tcp_open(port):
    def probe():
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    return probe


def descendants(roots):
    """roots and all their descendant pids, from one pass over /proc."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(children.get(pid, []))
    return out


def rss_mib(roots):
    total = 0
    for pid in descendants(roots):
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
    return total / 2**20


# ---------------------------------------------------------------- load

MISS_LUA = "bench/miss.lua"  # unique /search?q= URLs: every request renders

UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise Failure(f"cannot read wrk latency {text!r}")
    return float(m.group(1)) * UNIT_MS[m.group(2)]


def wrk(args, url, seconds, miss, tag, rss_roots=None):
    argv = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    if miss:
        argv += ["-s", MISS_LUA, url, "--", tag]
    else:
        argv += [url + HIT_PATH]
    samples, done = [], threading.Event()

    def sample():
        done.wait(min(1.0, seconds / 4))  # past the connection ramp
        while not done.wait(0.25):
            samples.append(rss_mib(rss_roots))

    t = None
    if rss_roots:
        t = threading.Thread(target=sample, daemon=True)
        t.start()
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 40)
    finally:
        done.set()
        if t:
            t.join()
    if r.returncode != 0:
        raise Failure(f"wrk failed ({r.returncode}): {r.stderr.strip()}")
    out = r.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errors = sum(map(int, m.groups())) if (m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)) else 0
    return {"rps": rps, "p50": p50, "p99": p99, "non2xx": non2xx, "errors": errors,
            "rss": statistics.median(samples) if samples else None, "raw": out}


# ---------------------------------------------------------------- servers


def version(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        return "?"


def start_origin():
    port = free_port()
    p = spawn("origin", ["fixtures/origin/.venv/bin/python", "-u", "fixtures/origin/manage.py", "runserver",
                         f"127.0.0.1:{port}", "--noreload"])
    wait_ready("the Django origin", [p], tcp_open(port), 60)
    return f"http://127.0.0.1:{port}"


def write_data(fw, manifest, workdir):
    """data.mjs for the handler: the client asset URL as the node names it, the answers as JSON."""
    base = os.path.dirname(manifest["_path"])
    (bundle_name, bundle), = manifest["bundles"].items()
    client = None
    if bundle.get("client"):
        with open(os.path.join(base, bundle["client"]), "rb") as f:
            client = f"/_mizan/assets/{bundle_name}/client.{hashlib.sha256(f.read()).hexdigest()[:16]}.js"
    answers = {}
    with open("fixtures/data/answers/product_list.json") as f:
        answers["product_list"] = json.dumps(json.load(f)["product_list"]["data"], ensure_ascii=False)
    with open("fixtures/data/answers/product_7.json") as f:
        answers["product_detail:7"] = json.dumps(json.load(f)["product_detail"]["data"], ensure_ascii=False)
    path = os.path.join(workdir, "data.mjs")
    with open(path, "w") as f:
        f.write(f"// Generated by bench/peers/run.py for {fw}: the node's client asset URL and the origin's answers.\n")
        f.write(f"export const client = {json.dumps(client)};\n")
        f.write(f"export const answers = {json.dumps(answers, ensure_ascii=False)};\n")
    return os.path.join(base, bundle["file"]), path


def start_framework(fw, origin, ncpu):
    """Starts every server for one framework; returns {key: (base URL, [root Popen])}."""
    workdir = os.path.join(WORK, fw)
    os.makedirs(workdir, exist_ok=True)
    manifest_path = f"fixtures/manifests/{fw}.json"
    with open(manifest_path) as f:
        manifest = json.load(f)
    manifest["_path"] = manifest_path
    bundle, data = write_data(fw, manifest, workdir)
    bundle, data = os.path.abspath(bundle), os.path.abspath(data)
    servers = {}
    penv = {"PEERS_BUNDLE": bundle, "PEERS_DATA": data}

    # this node: memory store, bounded to NODE_STORE_MB: the miss path stores every unique page
    # (61 KB), which no peer does; a bounded store keeps its RSS comparable (say so in tables).
    port = free_port()
    p = spawn(f"{fw}-node", [NODE_BIN, "serve", "--dev", "--manifest", manifest_path, "--origin", origin,
                             "--memory-mb", str(NODE_STORE_MB), "--listen", f"127.0.0.1:{port}"],
              env={"MIZAN_SECRET": SECRET})
    servers["node"] = (f"http://127.0.0.1:{port}", [p])
    # this node: Redis store, on a redis-server of its own
    rport = free_port()
    r = spawn(f"{fw}-redis", ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"])
    wait_ready("redis-server", [r], tcp_open(rport), 20)
    port = free_port()
    p = spawn(f"{fw}-node-redis", [NODE_BIN, "serve", "--dev", "--manifest", manifest_path, "--origin", origin,
                                   "--store", f"redis://127.0.0.1:{rport}/", "--listen", f"127.0.0.1:{port}"],
              env={"MIZAN_SECRET": SECRET})
    servers["node-redis"] = (f"http://127.0.0.1:{port}", [p, r])

    # Node: node:cluster
    port = free_port()
    p = spawn(f"{fw}-node-cluster", ["node", f"{PEERS_DIR}/node.mjs"],
              env={**penv, "PEERS_PORT": str(port), "PEERS_WORKERS": str(ncpu)})
    servers["node-cluster"] = (f"http://127.0.0.1:{port}", [p])
    # Deno: deno serve --parallel (DENO_JOBS isolates)
    port = free_port()
    p = spawn(f"{fw}-deno", [f"{BIN}/deno", "serve", "-A", "--parallel", "--no-check", "--host", "127.0.0.1",
                             "--port", str(port), f"{PEERS_DIR}/deno.mjs"],
              env={**penv, "DENO_JOBS": str(ncpu), "DENO_NO_UPDATE_CHECK": "1", "NO_COLOR": "1"})
    servers["deno"] = (f"http://127.0.0.1:{port}", [p])
    # Bun: one process per core on one port with reusePort
    port = free_port()
    procs = [spawn(f"{fw}-bun-{i}", [f"{BIN}/bun", f"{PEERS_DIR}/bun.mjs"], env={**penv, "PEERS_PORT": str(port)})
             for i in range(ncpu)]
    servers["bun"] = (f"http://127.0.0.1:{port}", procs)
    # workerd: one process per core on one listening socket opened here (--socket-fd)
    with open(f"{PEERS_DIR}/workerd.capnp.tmpl") as f:
        tmpl = "".join(line for line in f if not line.startswith("#"))
    rel = lambda p: os.path.relpath(p, workdir)  # noqa: E731
    config = (tmpl.replace("{{WORKER}}", rel(f"{PEERS_DIR}/workerd-worker.mjs"))
              .replace("{{HANDLER}}", rel(f"{PEERS_DIR}/handler.mjs")).replace("{{BUNDLE}}", rel(bundle))
              .replace("{{DATA}}", rel(data)).replace("{{COMPAT_DATE}}", COMPAT_DATE)
              .replace("{{COMPAT_FLAGS}}", ", ".join(f'"{x}"' for x in COMPAT_FLAGS)))
    capnp = os.path.join(workdir, "workerd.capnp")
    with open(capnp, "w") as f:
        f.write(config)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    fd = sock.fileno()
    procs = [spawn(f"{fw}-workerd-{i}", [os.path.abspath(f"{BIN}/workerd"), "serve", "workerd.capnp",
                                          "--socket-fd", f"http={fd}"], pass_fds=(fd,), cwd=workdir)
             for i in range(ncpu)]
    sock.close()  # the workerd processes hold it
    servers["workerd"] = (f"http://127.0.0.1:{port}", procs)

    for key in ["node", "node-redis", "node-cluster", "deno", "bun", "workerd"]:
        url, procs = servers[key]
        probe = http_ok(url + "/_mizan/health") if key.startswith("node") and "cluster" not in key \
            else http_ok(url + HIT_PATH)
        wait_ready(f"{fw} {key}", procs, probe, 90)

    # the node's page, for the hello-world's body
    page = os.path.join(workdir, "page.html")
    wait_ready(f"{fw} node {HIT_PATH}", servers["node"][1], http_ok(servers["node"][0] + HIT_PATH), 30)
    with open(page, "wb") as f:
        f.write(get(servers["node"][0] + HIT_PATH)[1])
    port = free_port()
    p = spawn(f"{fw}-hello", [HELLO_BIN, f"127.0.0.1:{port}", page])
    servers["hello"] = (f"http://127.0.0.1:{port}", [p])

    # Varnish in front of the Node peer
    nport = int(servers["node-cluster"][0].rsplit(":", 1)[1])
    port = free_port()
    vcl = os.path.abspath(os.path.join(workdir, "peers.vcl"))
    with open(vcl, "w") as f:
        f.write(f"""vcl 4.1;
backend node {{ .host = "127.0.0.1"; .port = "{nport}"; }}
sub vcl_recv {{ unset req.http.Cookie; return (hash); }}
sub vcl_backend_response {{ set beresp.ttl = 1h; set beresp.grace = 1h; unset beresp.http.Set-Cookie; }}
""")
    vdir = f"/tmp/peers-varnish-{os.getpid()}-{fw}"
    shutil.rmtree(vdir, ignore_errors=True)
    varnishd = shutil.which("varnishd") or "/usr/sbin/varnishd"
    p = spawn(f"{fw}-varnish", [varnishd, "-F", "-n", vdir, "-a", f"127.0.0.1:{port}", "-f", vcl,
                                "-s", "malloc,256m", "-T", "none"])
    servers["varnish"] = (f"http://127.0.0.1:{port}", [p])
    # nginx proxy_cache in front of the Node peer
    port = free_port()
    ndir = os.path.abspath(os.path.join(workdir, "nginx"))
    shutil.rmtree(ndir, ignore_errors=True)
    os.makedirs(ndir)
    user = "user root root;" if os.geteuid() == 0 else ""
    with open(os.path.join(ndir, "nginx.conf"), "w") as f:
        f.write(f"""{user}
worker_processes {ncpu};
daemon off;
pid {ndir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {ndir}/body; proxy_temp_path {ndir}/proxy; fastcgi_temp_path {ndir}/fastcgi;
  uwsgi_temp_path {ndir}/uwsgi; scgi_temp_path {ndir}/scgi;
  proxy_cache_path {ndir}/cache levels=1:2 keys_zone=peers:10m max_size=256m inactive=1h use_temp_path=off;
  upstream node {{ server 127.0.0.1:{nport}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port};
    keepalive_requests 100000000;
    location / {{
      proxy_pass http://node;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache peers;
      proxy_cache_valid 200 1h;
      proxy_cache_lock on;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
    }}
  }}
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    p = spawn(f"{fw}-nginx", [nginx, "-e", "stderr", "-p", ndir, "-c", os.path.join(ndir, "nginx.conf")])
    servers["nginx"] = (f"http://127.0.0.1:{port}", [p])
    for key in ["hello", "varnish", "nginx"]:
        url, procs = servers[key]
        wait_ready(f"{fw} {key}", procs, http_ok(url + HIT_PATH), 60)
    return servers


def check_bodies(fw, servers):
    """Every server's body for the miss page and the hit page has the node's length, or fail."""
    problems, notes = [], []
    miss_url = f"{MISS_PATH}?q=peers-body-check"
    for path, keys, ref in [(miss_url, ["node"] + JS_PEERS, "node"),
                            (HIT_PATH, ["node", "node-redis", "hello", "varnish", "nginx"] + JS_PEERS, "node")]:
        bodies = {}
        for k in keys:
            status, body = get(servers[k][0] + path)
            if status != 200:
                problems.append(f"{k} {path}: status {status}")
            bodies[k] = body
        want = len(bodies[ref])
        for k, b in bodies.items():
            if len(b) != want:
                problems.append(f"{k} {path}: {len(b)} bytes, the node's page has {want}")
            elif b != bodies[ref]:
                i = next(i for i in range(want) if b[i] != bodies[ref][i])
                notes.append(f"{k} {path}: same length, bytes differ from offset {i}: "
                             f"{b[max(0, i - 40):i + 40]!r} vs {bodies[ref][max(0, i - 40):i + 40]!r}")
        log(f"{fw}: {path}: the node's page is {want} bytes; {len(keys)} servers checked")
        if path == HIT_PATH:
            hit_bytes = want
        else:
            miss_bytes = want
    for n in notes:
        log("note:", n)
    if problems:
        raise Failure(f"{fw}: response bodies differ in length (nobody may be measured doing less work):\n  "
                      + "\n  ".join(problems))
    return miss_bytes, hit_bytes, notes


def targets(servers):
    """(key, base URL, miss?, RSS roots) for every measured peer."""
    out = []
    for key, _ in MISS_PEERS:
        skey = "node" if key == "node-miss" else key
        out.append((key, servers[skey][0], True, [p.pid for p in servers[skey][1]]))
    for key, _ in HIT_PEERS:
        skey = {"node-hit": "node", "node-hit-redis": "node-redis"}.get(key, key)
        out.append((key, servers[skey][0], False, [p.pid for p in servers[skey][1]]))
    return out


def summarise(runs):
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    rss = [r["rss"] for r in runs if r["rss"] is not None]
    return {
        "rps": med("rps"), "rps_min": min(r["rps"] for r in runs), "rps_max": max(r["rps"] for r in runs),
        "p50": med("p50"), "p99": med("p99"), "p99_min": min(r["p99"] for r in runs),
        "p99_max": max(r["p99"] for r in runs), "rss": statistics.median(rss) if rss else None,
        "rss_max": max(rss) if rss else None, "non2xx": sum(r["non2xx"] for r in runs),
        "errors": sum(r["errors"] for r in runs), "runs": [{k: v for k, v in r.items() if k != "raw"} for r in runs],
    }


# ---------------------------------------------------------------- report

def fmt_rps(s):
    if s["rps_min"] == s["rps_max"]:
        return f"{s['rps']:,.0f}"
    return f"**{s['rps']:,.0f}** ({s['rps_min']:,.0f}–{s['rps_max']:,.0f})"


def fmt_ms(v):
    return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms"


def fmt_p99(s):
    if s["p99_min"] == s["p99_max"]:
        return fmt_ms(s["p99"])
    return f"{fmt_ms(s['p99'])} ({fmt_ms(s['p99_min'])}–{fmt_ms(s['p99_max'])})"


def fmt_rss(s):
    return "–" if s["rss"] is None else f"{s['rss']:.0f} MiB"


def report(results, meta):
    lines = [f"# bench/peers: {meta['date']}", "",
             f"Command: `{meta['command']}`; {meta['machine']}.",
             f"Load: `wrk -t{meta['threads']} -c{meta['connections']}`, keep-alive, {meta['runs']} run(s) of "
             f"{meta['duration']} s per peer after a {meta['warmup']} s warm-up, the peers alternated (order rotated "
             f"every round); wrk and the servers share the cores (not pinned). Median (min–max) over the runs; RSS: "
             f"median of /proc samples during the runs, all the server's processes summed.",
             f"Versions: {meta['versions']}; {meta['build']}.", ""]
    for fw, r in results.items():
        s = r["stats"]
        lines += [f"## {fw}: miss path, `{MISS_PATH}?q=<unique>` ({r['miss_bytes']:,} bytes, page Search, "
                  f"product_list data), every request renders", "",
                  "| server | req/s | p50 | p99 | RSS under load | vs best peer |", "|---|---|---|---|---|---|"]
        best_key = max(JS_PEERS, key=lambda k: s[k]["rps"])
        best = s[best_key]["rps"]
        for key, label in MISS_PEERS:
            x = s[key]
            name = f"**{label}**" if key == "node-miss" else label
            lines.append(f"| {name} | {fmt_rps(x)} | {fmt_ms(x['p50'])} | {fmt_p99(x)} | {fmt_rss(x)} | "
                         f"{x['rps'] / best:.2f}x |")
        nm = s["node-miss"]
        lines += ["", f"Miss path: the node does **{nm['rps'] / best:.2f}x** the best peer ({best_key}; target "
                  f">= 1.3x), p99 {fmt_ms(nm['p99'])} against {fmt_ms(s[best_key]['p99'])}; RSS "
                  f"{fmt_rss(nm)} against Node cluster's {fmt_rss(s['node-cluster'])}.", ""]
        lines += [f"## {fw}: hit path, `{HIT_PATH}` ({r['hit_bytes']:,} bytes)", "",
                  "| server | req/s | p50 | p99 | RSS under load | % of hello-world | node hit (memory) vs it |",
                  "|---|---|---|---|---|---|---|"]
        hello = s["hello"]["rps"]
        nh = s["node-hit"]["rps"]
        for key, label in HIT_PEERS:
            x = s[key]
            name = f"**{label}**" if key.startswith("node") else label
            lines.append(f"| {name} | {fmt_rps(x)} | {fmt_ms(x['p50'])} | {fmt_p99(x)} | {fmt_rss(x)} | "
                         f"{100 * x['rps'] / hello:.0f} % | {nh / x['rps']:.2f}x |")
        lines += ["", f"Hit path: the node (memory store) is **{100 * nh / hello:.0f} %** of the hello-world "
                  f"(target >= 95 %), **{nh / s['varnish']['rps']:.2f}x** Varnish and **{nh / s['nginx']['rps']:.2f}x** "
                  f"nginx (target >= 1.5x); with Redis {100 * s['node-hit-redis']['rps'] / hello:.0f} % of the "
                  f"hello-world. RSS of the Redis row includes its redis-server.", ""]
        bad = [f"{k}: {v['non2xx']} non-2xx, {v['errors']} socket errors" for k, v in s.items()
               if v["non2xx"] or v["errors"]]
        if bad:
            lines += ["**Errors during the runs**: " + "; ".join(bad), ""]
        if r["notes"]:
            lines += ["Bodies of the same length that differ in bytes: " + "; ".join(r["notes"]), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def main():
    global NODE_BIN, HELLO_BIN
    ap = argparse.ArgumentParser(prog="bench/peers/run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="React only, 1 run of 2 s per peer after 1 s warm-up; PNGs into bench/out/")
    ap.add_argument("--frameworks", help="comma-separated (default: react,vue,svelte; --quick: react)")
    ap.add_argument("--runs", type=int, help="rounds of runs, peers alternated (default 4; --quick 1)")
    ap.add_argument("--duration", type=float, help="seconds per run (default 8; --quick 2)")
    ap.add_argument("--warmup", type=float, help="seconds of warm-up per peer (default 3; --quick 1)")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    q = args.quick
    frameworks = (args.frameworks or ("react" if q else "react,vue,svelte")).split(",")
    args.runs = args.runs or (1 if q else 4)
    args.duration = args.duration or (2 if q else 8)
    args.warmup = args.warmup if args.warmup is not None else (1 if q else 3)
    for fw in frameworks:
        if not os.path.exists(f"fixtures/manifests/{fw}.json"):
            raise Failure(f"no fixtures/manifests/{fw}.json")
    dur = int(args.duration) if float(args.duration).is_integer() else args.duration
    args.duration = dur
    os.makedirs(WORK, exist_ok=True)
    for name in os.listdir(WORK):
        if name.endswith(".log"):
            os.remove(os.path.join(WORK, name))
    ncpu = len(os.sched_getaffinity(0))
    started = time.time()
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    meta = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["bench/peers/run"] + sys.argv[1:]),
        "machine": f"{ncpu} vCPU ({cpu}), {platform.system()} {platform.release()}, load average at start "
                   f"{os.getloadavg()[0]:.2f}",
        "threads": args.threads, "connections": args.connections, "runs": args.runs,
        "duration": args.duration, "warmup": args.warmup,
        "versions": ", ".join([
            f"Node {version(['node', '--version'])}", version([f"{BIN}/deno", "--version"]),
            f"Bun {version([f'{BIN}/bun', '--version'])}", version([f"{BIN}/workerd", "--version"]),
            version([shutil.which("varnishd") or "/usr/sbin/varnishd", "-V"]),
            version([shutil.which("nginx") or "/usr/sbin/nginx", "-v"]),
            version(["redis-server", "--version"]).split(" sha=")[0], version(["wrk", "--version"]).split(" [")[0],
        ]),
    }
    head = subprocess.run(["git", "log", "-1", "--format=%h"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                           capture_output=True, text=True).stdout.strip()
    built = datetime.datetime.fromtimestamp(os.path.getmtime(NODE_BIN)).strftime("%Y-%m-%d %H:%M")
    # Copies, so a rebuild in the tree during the run cannot swap the binary between frameworks.
    for name in ["NODE_BIN", "HELLO_BIN"]:  # noqa: F824
        src = globals()[name]
        dst = os.path.join(WORK, os.path.basename(src))
        shutil.copy2(src, dst)
        globals()[name] = os.path.abspath(dst)
    meta["build"] = f"mizan-render at {head}{' with uncommitted changes in src/Cargo' if dirty else ''}, binary built {built}"
    log(f"{', '.join(frameworks)}: {args.runs} x {args.duration} s per peer, warm-up {args.warmup} s, {ncpu} cores")
    origin = start_origin()
    results = {}
    for fw in frameworks:
        t0 = time.time()
        servers = start_framework(fw, origin, ncpu)
        log(f"{fw}: {len(servers)} servers up in {time.time() - t0:.1f} s")
        miss_bytes, hit_bytes, notes = check_bodies(fw, servers)
        tg = targets(servers)
        for key, url, miss, _ in tg:
            wrk(args, url, args.warmup, miss, f"warm-{key}")
        runs = {key: [] for key, *_ in tg}
        for rnd in range(args.runs):
            order = tg[rnd % len(tg):] + tg[:rnd % len(tg)]
            for key, url, miss, roots in order:
                res = wrk(args, url, args.duration, miss, f"r{rnd}-{key}-{os.getpid()}", roots)
                runs[key].append(res)
                flag = f" ({res['non2xx']} non-2xx, {res['errors']} socket errors)" \
                    if res["non2xx"] or res["errors"] else ""
                log(f"{fw} round {rnd + 1}/{args.runs} {key}: {res['rps']:,.0f} req/s, p50 {res['p50']:.2f} ms, "
                    f"p99 {res['p99']:.2f} ms, RSS {res['rss'] or 0:.0f} MiB{flag}")
                with open(os.path.join(WORK, f"wrk-{fw}-{key}-{rnd}.txt"), "w") as f:
                    f.write(res["raw"])
        results[fw] = {"miss_bytes": miss_bytes, "hit_bytes": hit_bytes, "notes": notes,
                       "stats": {k: summarise(v) for k, v in runs.items()}}
        ours = [p for k, (_, ps) in servers.items() for p in ps]
        stop(ours)
        with open(os.path.join(OUT, "peers.md"), "w") as f:  # so far, in case a later framework fails
            f.write(report(results, meta) + "\n")
    meta["seconds"] = round(time.time() - started)
    meta["machine"] += f", at the end {os.getloadavg()[0]:.2f}"
    md = report(results, meta)
    print(md)
    with open(os.path.join(OUT, "peers.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(OUT, "peers.json"), "w") as f:
        json.dump({"meta": meta, "results": results,
                   "labels": dict(MISS_PEERS + HIT_PEERS)}, f, indent=1)
    prefix = os.path.join(OUT, "peers") if q else "bench/peers"
    subprocess.run([sys.executable, f"{PEERS_DIR}/plot.py", os.path.join(OUT, "peers.json"), prefix], check=True)
    log(f"done in {meta['seconds']} s: {OUT}/peers.md, {prefix}-rps.png, {prefix}-p99.png, {prefix}-rss.png")
    errs = [(fw, k) for fw, r in results.items() for k, v in r["stats"].items() if v["non2xx"] or v["errors"]]
    if errs:
        log(f"FAILED: non-2xx answers or socket errors under load: {errs}")
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failure as e:
        log(f"FAILED: {e}")
        sys.exit(1)
