"""bench/python/bench.py: mizan_cache from Python side by side with Django's caches (issue 20).

Run through bench/python/run, which starts its own redis-server and passes --redis. Every peer
is measured in the same process, in the same run, on the same data, with the same harness:

  memory  Django LocMemCache            against mizan_cache.Cache("memory")
  redis   django-redis (DefaultClient)  against mizan_cache.Cache("redis://...") on the same server
  sqlite  Django DatabaseCache (SQLite) and FileBasedCache  against Cache("sqlite:<file>")

The data: --products N products, each with a ~2 KB JSON data entry (context product_detail,
params {"id": i}) and a ~50 KB HTML page (/products/<i>) that depends on it. Django stores the
raw bytes (its cheapest form: no response object, no metadata); mizan stores the body with the
protocol's metadata (kind, ttl, deps, generations, headers). Operations, each for --duration
seconds per backend, split into --rounds rounds that alternate the backends:

  get hit     random present key; the caller gets the body bytes (Django: cache.get(k);
              mizan: cache.get(k).body)
  get miss    random absent key
  put         overwrite a random present key (Django: cache.set(k, body, 3600);
              mizan: cache.put(k, body, metadata))
  purge       everything that depends on product_detail;id=<i> (its data entry and its page,
              2 of the 2N entries): mizan cache.purge("product_detail", {"id": i}); Django has
              no purge by (context, params): the closest is delete_many() of keys the caller
              must already know, or, for django-redis, delete_pattern("p<i>:*") over a naming
              convention (a SCAN of the whole keyspace). The purged entries are put back
              after each timed purge, untimed.

Latency: each call timed alone with time.perf_counter_ns (median, p99). ops/s: a second phase
of the same length without per-call timers (calls in batches of 64, total wall time). Every
operation runs through a one-argument Python closure for every backend alike; the "harness"
line gives what an empty closure costs in the same loop. Seeds are fixed.

Threads: --threads T threads doing random get hits for --duration s, total ops/s against one
thread, per backend: mizan releases the GIL while it waits for Redis (and so does redis-py
while it waits on its socket), so threads overlap their round trips.

Splits (mizan alone, each group's columns alternated in one measurement): where a get goes
(the Entry, the body's copy, get_data, the key's derivation) and where a put goes (without
deps, one bare store call, the metadata's conversion); and for Redis, what the server does per
call: the commands the client sends (MONITOR, which tells them from those Lua scripts run) and
server-side µs (INFO commandstats), beside a control that SETs the same bodies through a
one-line Lua script.
"""

import argparse
import gc
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time

perf = time.perf_counter_ns
TTL = 3600


# ---------------------------------------------------------------------------------------------
# Data


def make_data(rng, i):
    """A ~2 KB JSON product (the data of product_detail for {"id": i})."""
    words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor".split()

    def text(n):
        return " ".join(rng.choice(words) for _ in range(n))

    d = {
        "id": i,
        "sku": f"SKU-{i:06d}",
        "name": text(4).title(),
        "price": {"amount": round(rng.uniform(1, 500), 2), "currency": "EUR"},
        "stock": rng.randrange(0, 1000),
        "tags": [rng.choice(words) for _ in range(5)],
        "description": text(60),
        "reviews": [{"author": text(2).title(), "stars": rng.randrange(1, 6), "text": text(12)} for _ in range(5)],
    }
    s = json.dumps(d, separators=(",", ":"))
    # Pad or trim the description to land at 2000 bytes.
    d["description"] = (d["description"] + " " + text(200))[: max(0, len(d["description"]) + 2000 - len(s))]
    return json.dumps(d, separators=(",", ":")).encode()


def make_page(rng, i, data):
    """A ~50 KB HTML page for /products/<i>."""
    rows = []
    size = 0
    k = 0
    while size < 49_000:
        row = f'<tr><td class="sku">SKU-{(i * 31 + k) % 100000:06d}</td><td>{rng.random():.6f}</td><td>related item {k} for product {i}</td></tr>\n'
        rows.append(row)
        size += len(row)
        k += 1
    head = f"<!doctype html><html><head><title>Product {i}</title></head><body><main><h1>Product {i}</h1><script type=\"application/json\">{data.decode()}</script><table>\n"
    body = head + "".join(rows) + "</table></main></body></html>\n"
    return body.encode()


class Dataset:
    def __init__(self, n, seed):
        rng = random.Random(seed)
        self.n = n
        self.data = [make_data(rng, i) for i in range(n)]
        self.pages = [make_page(rng, i, self.data[i]) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Backends: each exposes one-argument closures of product ids.


class Backend:
    name = ""
    family = ""
    is_mizan = False

    def fill(self, ds):
        for i in range(ds.n):
            self.refill(i)

    def close(self):
        pass


class DjangoBackend(Backend):
    def __init__(self, name, family, cache, ds, pattern_purge=False):
        self.name, self.family, self.cache, self.ds = name, family, cache, ds
        self.dkeys = [f"p{i}:data" for i in range(ds.n)]
        self.pkeys = [f"p{i}:page" for i in range(ds.n)]
        self.mkeys = [f"p{i}:missing" for i in range(ds.n)]
        self.pattern_purge = pattern_purge

    def ops(self):
        c, dk, pk, mk, ds = self.cache, self.dkeys, self.pkeys, self.mkeys, self.ds
        get, set_, delete_many = c.get, c.set, c.delete_many
        data, pages = ds.data, ds.pages
        ops = {
            "get_data": lambda i: get(dk[i]),
            "get_page": lambda i: get(pk[i]),
            "get_miss": lambda i: get(mk[i]),
            "put_data": lambda i: set_(dk[i], data[i], TTL),
            "put_page": lambda i: set_(pk[i], pages[i], TTL),
            "purge": lambda i: delete_many([dk[i], pk[i]]),
        }
        if self.pattern_purge:
            dp = c.delete_pattern
            ops["purge_pattern"] = lambda i: dp(f"p{i}:*")
            ops["purge_pattern_1000"] = lambda i: dp(f"p{i}:*", itersize=1000)
        return ops

    def refill(self, i):
        self.cache.set_many({self.dkeys[i]: self.ds.data[i], self.pkeys[i]: self.ds.pages[i]}, TTL)

    def check(self, ds):
        c = self.cache
        assert c.get(self.dkeys[7]) == ds.data[7] and c.get(self.pkeys[7]) == ds.pages[7]
        assert c.get(self.mkeys[7]) is None
        c.delete_many([self.dkeys[7], self.pkeys[7]])
        assert c.get(self.dkeys[7]) is None and c.get(self.pkeys[7]) is None
        assert c.get(self.dkeys[8]) == ds.data[8]
        self.refill(7)
        if self.pattern_purge:
            assert c.delete_pattern("p7:*") == 2, "delete_pattern p7:* should delete 2 keys"
            assert c.get(self.dkeys[7]) is None and c.get(self.dkeys[70]) == ds.data[70]
            self.refill(7)


class MizanBackend(Backend):
    is_mizan = True

    def __init__(self, name, family, cache, ds):
        import mizan_cache

        self.name, self.family, self.cache, self.ds = name, family, cache, ds
        self.mz = mizan_cache
        keys = cache.keys
        self.deps = [[{"context": "product_detail", "params": {"id": i}}] for i in range(ds.n)]
        self.dkeys = [keys.data_key("product_detail", {"id": i}) for i in range(ds.n)]
        self.pkeys = [keys.page_key(f"/products/{i}", site=cache.site) for i in range(ds.n)]
        self.mkeys = [keys.data_key("product_detail", {"id": i, "missing": True}) for i in range(ds.n)]
        self.tags = [mizan_cache.dependency_tags([("product_detail", {"id": i})]) for i in range(ds.n)]
        self.dmeta = [None] * ds.n
        self.pmeta = [None] * ds.n

    def _metas(self, i, generation):
        deps = self.deps[i]
        dm = {"kind": "data", "key": self.dkeys[i], "ttl_s": TTL, "swr_s": 60, "deps": deps,
              "headers": [["content-type", "application/json"]], "generation": generation}
        pm = {"kind": "page", "key": self.pkeys[i], "ttl_s": TTL, "swr_s": 60, "deps": deps,
              "headers": [["content-type", "text/html; charset=utf-8"]], "generation": generation,
              "render": {"framework": "react", "bundle": "0" * 64, "ms": 2}}
        return dm, pm

    def refill(self, i):
        # As a render does: read the generations of its dependencies' tags, then put with them.
        gens = self.cache.generations(self.tags[i])
        dm, pm = self._metas(i, gens)
        self.dmeta[i], self.pmeta[i] = dm, pm
        assert self.cache.put(self.dkeys[i], self.ds.data[i], dm)
        assert self.cache.put(self.pkeys[i], self.ds.pages[i], pm)

    def ops(self):
        c, dk, pk, mk, ds = self.cache, self.dkeys, self.pkeys, self.mkeys, self.ds
        get, put, purge = c.get, c.put, c.purge
        data, pages, dmeta, pmeta = ds.data, ds.pages, self.dmeta, self.pmeta
        ids = [{"id": i} for i in range(ds.n)]
        get_data_helper = c.get_data
        gens, jcs = c.generations, self.mz.jcs
        one_tag = [[t[-1]] for t in self.tags]
        bare = [{"kind": "data", "key": dk[i], "ttl_s": TTL, "deps": []} for i in range(ds.n)]
        return {
            "get_data": lambda i: get(dk[i]).body,
            "get_page": lambda i: get(pk[i]).body,
            "get_miss": lambda i: get(mk[i]),
            "put_data": lambda i: put(dk[i], data[i], dmeta[i]),
            "put_page": lambda i: put(pk[i], pages[i], pmeta[i]),
            "purge": lambda i: purge("product_detail", ids[i]),
            # Timing splits (not peer rows): where a get's and a put's time goes.
            "split_get_entry": lambda i: get(pk[i]),
            "split_get_data_entry": lambda i: get(dk[i]),
            "split_get_data_helper": lambda i: get_data_helper("product_detail", ids[i]),
            "split_data_key": lambda i: c.data_key("product_detail", ids[i]),
            # put with no deps and no generations: no tags to index or check.
            "split_put_bare": lambda i: put(dk[i], data[i], bare[i]),
            # One store call through the facade (GIL released, the runtime's block_on) doing
            # almost nothing: the generation of one tag.
            "split_store_call": lambda i: gens(one_tag[i]),
            # The metadata's conversion from Python (depythonize) plus its JCS text: an upper
            # bound of what converting a put's metadata costs.
            "split_meta_convert": lambda i: jcs(dmeta[i]),
        }

    def check(self, ds):
        c = self.cache
        e = c.get(self.pkeys[7])
        assert e is not None and e.body == ds.pages[7] and e.kind == "page" and e.status == 200
        assert c.get(self.dkeys[7]).body == ds.data[7]
        assert c.get_data("product_detail", {"id": 7}) == ds.data[7]
        assert c.get(self.mkeys[7]) is None
        n = c.purge("product_detail", {"id": 7})
        assert n == 2, f"purge product_detail;id=7 removed {n} entries, expected 2"
        assert c.get(self.dkeys[7]) is None and c.get(self.pkeys[7]) is None
        assert c.get(self.dkeys[70]).body == ds.data[70], "purge of id=7 must leave id=70"
        # A put that read the generations before the purge is dropped.
        stale_dm, _ = self.dmeta[7], None
        assert c.put(self.dkeys[7], ds.data[7], stale_dm) is False, "a put older than a purge must be dropped"
        self.refill(7)
        assert c.get(self.dkeys[7]).body == ds.data[7]


class LuaSetControl(Backend):
    """Not a peer: the same bodies SET through a one-line Lua script (EVALSHA), to tell what
    passing a value through a script costs redis-server from what mizan's put script does."""

    name = "one-line Lua SET (control)"

    def __init__(self, url, ds):
        import redis as redis_py

        r = redis_py.Redis.from_url(url.rstrip("/") + "/2")
        sha = r.script_load("return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])")
        evalsha = r.evalsha
        data, pages = ds.data, ds.pages
        self._ops = {
            "put_data": lambda i: evalsha(sha, 1, f"p{i}:data", data[i], TTL * 1000),
            "put_page": lambda i: evalsha(sha, 1, f"p{i}:page", pages[i], TTL * 1000),
        }


# ---------------------------------------------------------------------------------------------
# Harness


def timed_latencies(fn, seq, deadline_ns, after=None):
    """Per-call latencies (ns) of fn(i) over seq, cycling, until deadline."""
    lat = []
    append = lat.append
    n = len(seq)
    j = 0
    if after is None:
        while True:
            for i in seq[j : j + 256]:
                t0 = perf()
                fn(i)
                append(perf() - t0)
            j = (j + 256) % n
            if perf() >= deadline_ns:
                return lat
    else:
        while True:
            for i in seq[j : j + 16]:
                t0 = perf()
                fn(i)
                append(perf() - t0)
                after(i)
            j = (j + 16) % n
            if perf() >= deadline_ns:
                return lat


def throughput(fn, seq, deadline_ns, after=None):
    """(calls, ns) of fn(i) in batches of 64 with no per-call timer; with `after` (a purge's
    refill), only the calls are timed, per batch of 1."""
    n = len(seq)
    j = 0
    calls = 0
    spent = 0
    if after is None:
        while True:
            batch = seq[j : j + 64]
            t0 = perf()
            for i in batch:
                fn(i)
            spent += perf() - t0
            calls += len(batch)
            j = (j + 64) % n
            if perf() >= deadline_ns:
                return calls, spent
    else:
        while True:
            for i in seq[j : j + 16]:
                t0 = perf()
                fn(i)
                spent += perf() - t0
                after(i)
            calls += len(seq[j : j + 16])
            j = (j + 16) % n
            if perf() >= deadline_ns:
                return calls, spent


def pct(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


class Result:
    def __init__(self):
        self.lat = []
        self.calls = 0
        self.ns = 0
        self.rates = []

    def add(self, lat, calls, ns):
        self.lat.extend(lat)
        self.calls += calls
        self.ns += ns
        if ns:
            self.rates.append(calls / ns * 1e9)

    def summary(self):
        s = sorted(self.lat)
        return {
            "p50_us": pct(s, 0.5) / 1000,
            "p99_us": pct(s, 0.99) / 1000,
            "ops_s": statistics.median(self.rates) if self.rates else float("nan"),
            "samples": len(s),
            "calls": self.calls,
        }


def measure(backends, opname, seq, seconds, rounds, after_attr=None):
    """`opname` of each backend, alternated over rounds (see measure_many)."""
    return measure_many(
        [(b.name, b._ops[opname], getattr(b, after_attr) if after_attr else None) for b in backends if opname in b._ops],
        seq, seconds, rounds)


def measure_many(contestants, seq, seconds, rounds):
    """contestants: (name, fn, after or None). Alternated over rounds (the order reversed every
    other round); each round gives each seconds/rounds, half for latencies, half for ops/s."""
    res = {name: Result() for name, _, _ in contestants}
    per = seconds / rounds / 2
    for r in range(rounds):
        order = contestants[::-1] if r % 2 else contestants
        for name, fn, after in order:
            # Warm-up: 500 calls, or a tenth of the phase if that is shorter (at least 5 calls).
            end = perf() + int(per * 1e8)
            for k, i in enumerate(seq[:500]):
                fn(i)
                if after:
                    after(i)
                if k >= 5 and perf() > end:
                    break
            gc.collect()
            lat = timed_latencies(fn, seq, perf() + int(per * 1e9), after)
            calls, ns = throughput(fn, seq, perf() + int(per * 1e9), after)
            res[name].add(lat, calls, ns)
    return {k: v.summary() for k, v in res.items()}


def thread_run(fn, seq, threads, seconds):
    """Total calls/s of `threads` threads each calling fn over its own slice of seq."""
    stop = threading.Event()
    counts = [0] * threads
    barrier = threading.Barrier(threads + 1)

    def worker(t):
        local = seq[t::threads] or seq
        n = len(local)
        j = 0
        c = 0
        barrier.wait()
        while not stop.is_set():
            for i in local[j : j + 32]:
                fn(i)
            c += len(local[j : j + 32])
            j = (j + 32) % n
        counts[t] = c

    ts = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = perf()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join()
    return sum(counts) / ((perf() - t0) / 1e9)


def redis_server_split(url, backend, opname, ids, refill=False):
    """What redis-server does for each call of `opname`: the commands the client sends (round
    trips, unless pipelined), counted with MONITOR, which tells them from those a Lua script
    runs; and server-side µs per call from INFO commandstats (a script's time includes the
    commands it runs; a command name sent both ways is apportioned by count)."""
    import redis as redis_py

    fn = backend._ops[opname]
    admin = redis_py.Redis.from_url(url)

    # Pass 1: server time.
    fn(ids[0])  # connections open, scripts loaded
    if refill:
        backend.refill(ids[0])
    admin.config_resetstat()
    for i in ids:
        fn(i)
    stats = admin.info("commandstats")
    if refill:
        for i in ids:
            backend.refill(i)
    # Pass 2: what the client sends (MONITOR), on the same calls.
    sent, in_lua = {}, {}
    ready = threading.Event()

    def monitor():
        with redis_py.Redis.from_url(url).monitor() as m:
            ready.set()
            for c in m.listen():
                command = c["command"]
                if command.endswith("mizan-bench-split-end"):
                    return
                name = command.split(" ", 1)[0].strip('"').upper()
                d = in_lua if c.get("client_type") == "lua" else sent
                d[name] = d.get(name, 0) + 1

    t = threading.Thread(target=monitor, daemon=True)
    t.start()
    ready.wait()
    time.sleep(0.05)
    for i in ids:
        fn(i)
    admin.echo("mizan-bench-split-end")
    t.join(30)
    if refill:
        for i in ids:
            backend.refill(i)
    usec = 0.0
    for name, st in stats.items():
        cmd = name.removeprefix("cmdstat_").upper()
        if cmd in ("CONFIG|RESETSTAT", "INFO"):
            continue
        top = sent.get(cmd, 0)
        total = top + in_lua.get(cmd, 0)
        if total:
            usec += st["usec"] * top / total
    admin.close()
    n = len(ids)
    return {"sent_per_op": sum(sent.values()) / n, "sent": {k: v / n for k, v in sent.items()},
            "in_scripts_per_op": sum(in_lua.values()) / n, "server_us_per_op": usec / n}


# ---------------------------------------------------------------------------------------------
# Setup


def configure_django(redis_url_db1, workdir):
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        INSTALLED_APPS=[],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(workdir, "django-db.sqlite3")}},
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "bench",
                        "OPTIONS": {"MAX_ENTRIES": 1_000_000}},
            "redis": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": redis_url_db1,
                      "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"}},
            "db": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "bench_cache",
                   "OPTIONS": {"MAX_ENTRIES": 1_000_000}},
            "file": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                     "LOCATION": os.path.join(workdir, "django-files"), "OPTIONS": {"MAX_ENTRIES": 1_000_000}},
        },
    )
    django.setup()
    from django.core.management import call_command

    call_command("createcachetable", verbosity=0)


def machine_line():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    except Exception:
        redis_v = "?"
    import django
    import django_redis
    import redis as redis_py

    try:
        import hiredis  # noqa: F401

        parser = "hiredis parser"
    except ImportError:
        parser = "Python parser"
    return (f"{cpu}, {os.cpu_count()} vCPUs; Python {platform.python_version()}, Django {django.get_version()}, "
            f"django-redis {'.'.join(map(str, django_redis.VERSION))}, redis-py {redis_py.__version__} ({parser}), "
            f"redis-server {redis_v.replace('v=', '')}; load average before: {os.getloadavg()[0]:.2f}")


# ---------------------------------------------------------------------------------------------
# Report

OP_LABELS = {
    "get_data": "get hit, 2 KB data",
    "get_page": "get hit, 50 KB page",
    "get_miss": "get miss",
    "put_data": "put, 2 KB data",
    "put_page": "put, 50 KB page",
    "purge": "purge product_detail;id=i (2 of {total} entries); Django: delete_many of the 2 known keys",
    "purge_pattern": "  django-redis delete_pattern('p<i>:*'), default itersize 10",
    "purge_pattern_1000": "  django-redis delete_pattern('p<i>:*', itersize=1000)",
}


def fmt_us(v):
    if v != v:
        return "—"
    if v >= 1000:
        return f"{v / 1000:.2f} ms"
    if v >= 100:
        return f"{v:.0f} µs"
    if v >= 10:
        return f"{v:.1f} µs"
    return f"{v:.2f} µs"


def fmt_rate(v):
    return "—" if v != v else f"{v:,.0f}"


def table(family, backends, results, ops, total):
    names = [b.name for b in backends]
    mizan = next(b.name for b in backends if b.is_mizan)
    peers = [n for n in names if n != mizan]
    out = [f"**{family}**", ""]
    head = "| operation | " + " | ".join(f"{n}: p50 / p99 | {n}: ops/s" for n in names) + " | mizan ops/s ÷ " + (" / ".join(peers)) + " |"
    out.append(head)
    out.append("|---|" + "---|---|" * len(names) + "---|")
    for op in ops:
        r = results.get(op)
        if not r:
            continue
        cells = []
        for n in names:
            s = r.get(n)
            if s is None:
                cells.append(" | ")
            else:
                cells.append(f"{fmt_us(s['p50_us'])} / {fmt_us(s['p99_us'])} | {fmt_rate(s['ops_s'])}")
        if op.startswith("purge_pattern"):
            base = results.get("purge", {}).get(mizan)
        else:
            base = r.get(mizan)
        ratios = []
        for p in peers:
            s = r.get(p)
            if s is None or base is None:
                ratios.append("")
            else:
                ratios.append(f"{base['ops_s'] / s['ops_s']:.2f}x")
        label = OP_LABELS[op].format(total=f"{total:,}")
        out.append(f"| {label} | " + " | ".join(cells) + " | " + " / ".join(x for x in ratios if x) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis", required=True, help="redis://127.0.0.1:<port> of the benchmark's own server")
    ap.add_argument("--workdir", required=True, help="scratch directory (SQLite files, FileBasedCache)")
    ap.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per backend per operation (default 4)")
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds per operation (default 4)")
    ap.add_argument("--threads", type=int, default=4, help="threads of the threaded run (default 4)")
    ap.add_argument("--products", type=int, default=1000, help="products: N data entries and N pages (default 1000)")
    ap.add_argument("--families", default="memory,redis,sqlite", help="which tables (default memory,redis,sqlite)")
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--json", help="also write the raw results here")
    a = ap.parse_args()
    if a.quick:
        a.duration, a.rounds, a.products = 0.3, 1, 100
    families = a.families.split(",")

    print(f"# machine: {machine_line()}", flush=True)
    configure_django(a.redis.rstrip("/") + "/1", a.workdir)
    from django.core.cache import caches

    import mizan_cache

    secret = mizan_cache.EXAMPLE_SECRET
    ds = Dataset(a.products, a.seed)
    print(f"# data: {a.products} products; data entries {min(map(len, ds.data))}-{max(map(len, ds.data))} B, "
          f"pages {min(map(len, ds.pages))}-{max(map(len, ds.pages))} B", flush=True)

    fam = {}
    if "memory" in families:
        fam["memory"] = [DjangoBackend("LocMemCache", "memory", caches["default"], ds),
                         MizanBackend("mizan memory", "memory", mizan_cache.Cache("memory", secret=secret, dev=True, memory_mb=1024), ds)]
    if "redis" in families:
        r = caches["redis"]
        r.clear()  # db 1: django-redis's own
        mz = mizan_cache.Cache(a.redis, secret=secret, dev=True)
        fam["redis"] = [DjangoBackend("django-redis", "redis", r, ds, pattern_purge=True),
                        MizanBackend("mizan redis", "redis", mz, ds)]
    if "sqlite" in families:
        fam["sqlite"] = [DjangoBackend("Django DatabaseCache (SQLite)", "sqlite", caches["db"], ds),
                         DjangoBackend("FileBasedCache", "sqlite", caches["file"], ds),
                         MizanBackend("mizan sqlite", "sqlite", mizan_cache.Cache("sqlite:" + os.path.join(a.workdir, "mizan.sqlite3"), secret=secret, dev=True), ds)]

    for f, bs in fam.items():
        for b in bs:
            t0 = perf()
            b.fill(ds)
            b._ops = b.ops()
            b.check(ds)
            print(f"# {b.name}: filled {2 * ds.n} entries in {(perf() - t0) / 1e9:.2f} s, checks passed", flush=True)

    rng = random.Random(a.seed)
    seq = [rng.randrange(ds.n) for _ in range(200_000 if not a.quick else 5_000)]

    # What the harness costs: an empty closure in the same loops.
    class Empty(Backend):
        name = "harness"
        _ops = {"noop": lambda i: None}

    h = measure([Empty()], "noop", seq, a.duration, a.rounds)["harness"]
    print(f"# harness: an empty one-argument closure in the same loops: p50 {fmt_us(h['p50_us'])} "
          f"(timer included), {fmt_rate(h['ops_s'])} calls/s", flush=True)

    ops = ["get_data", "get_page", "get_miss", "put_data", "put_page", "purge", "purge_pattern", "purge_pattern_1000"]
    results = {}
    all_json = {"harness": h}
    for f, bs in fam.items():
        results[f] = {}
        for op in ops:
            if not any(op in b._ops for b in bs):
                continue
            after = "refill" if op.startswith("purge") else None
            secs = a.duration if not op.startswith("purge_pattern") else max(a.duration / 2, 0.3)
            results[f][op] = measure(bs, op, seq, secs, a.rounds, after)
            print(f"# {f} {op}: " + "; ".join(f"{n} p50 {fmt_us(s['p50_us'])} {fmt_rate(s['ops_s'])}/s" for n, s in results[f][op].items()), flush=True)
        all_json[f] = results[f]

    # Timing splits for mizan: where a get goes.
    splits = {}
    for f, bs in fam.items():
        m = next(b for b in bs if b.is_mizan)
        splits[f] = {}
        # Each group alternated in one measurement, so that its figures compare with each other.
        for group in (["get_page", "split_get_entry", "get_data", "split_get_data_entry", "split_get_data_helper", "split_data_key"],
                      ["put_data", "split_put_bare", "split_store_call", "split_meta_convert"]):
            splits[f].update(measure_many([(op, m._ops[op], None) for op in group], seq, a.duration / 2 * len(group) / 2, a.rounds))
        m.fill(ds)  # split_put_bare wrote data entries without deps: put them back as they were
    all_json["splits"] = splits

    # What redis-server does per call (INFO commandstats): round trips and server time.
    server = {}
    if "redis" in fam:
        distinct = list(dict.fromkeys(seq))[: min(200, ds.n // 2)]
        control = LuaSetControl(a.redis, ds)
        for b in fam["redis"] + [control]:
            for op in ops:
                if op in b._ops:
                    ids = distinct if op.startswith("purge") else seq[:1000]
                    server[(b.name, op)] = redis_server_split(a.redis, b, op, ids, refill=op.startswith("purge"))
    all_json["redis_server"] = {f"{k[0]} {k[1]}": v for k, v in server.items()}

    # Threads.
    threaded = {}
    tsecs = a.duration if not a.quick else 0.5
    for f in [x for x in ("memory", "redis") if x in fam]:
        for b in fam[f]:
            for op in ("get_data", "get_page"):
                one = thread_run(b._ops[op], seq, 1, tsecs)
                many = thread_run(b._ops[op], seq, a.threads, tsecs)
                threaded[(b.name, op)] = (one, many)
                print(f"# threads {b.name} {op}: 1 thread {one:,.0f}/s, {a.threads} threads {many:,.0f}/s", flush=True)
    all_json["threads"] = {f"{k[0]} {k[1]}": v for k, v in threaded.items()}

    # Report.
    print()
    print(f"Machine: {machine_line()}")
    print()
    print(f"{a.products:,} products: {a.products:,} data entries ({min(map(len, ds.data)):,}–{max(map(len, ds.data)):,} B) "
          f"and {a.products:,} pages ({min(map(len, ds.pages)):,}–{max(map(len, ds.pages)):,} B) per store; "
          f"{a.duration:g} s per backend per operation in {a.rounds} alternating rounds (half timed per call, half for ops/s); "
          f"single thread. Harness (empty closure, timer included): p50 {fmt_us(h['p50_us'])}.")
    for f, bs in fam.items():
        print()
        print(table(f, bs, results[f], ops, 2 * ds.n))
    print()
    def cell(x):
        return f"{fmt_us(x['p50_us'])} / {fmt_us(x['p99_us'])}, {fmt_rate(x['ops_s'])}"

    print("**mizan: where a get goes** (p50 / p99, ops/s; the columns of a row measured together, alternating)")
    print()
    print("| store | get(k) → Entry, 50 KB page | get(k).body, 50 KB | get(k) → Entry, 2 KB data | get(k).body, 2 KB | get_data(context, params) | data_key(context, params) |")
    print("|---|---|---|---|---|---|---|")
    for f in fam:
        s = splits[f]
        print(f"| {f} | {cell(s['split_get_entry'])} | {cell(s['get_page'])} | {cell(s['split_get_data_entry'])} | "
              f"{cell(s['get_data'])} | {cell(s['split_get_data_helper'])} | {cell(s['split_data_key'])} |")
    print()
    print("**mizan: where a put goes** (2 KB data entry; p50 / p99, ops/s; the columns of a row measured together, alternating)")
    print()
    print("| store | put, full metadata (as in the table) | put, no deps (no tags to check or index) | one store call: generations([tag]) | metadata from Python: jcs(metadata) |")
    print("|---|---|---|---|---|")
    for f in fam:
        s = splits[f]
        print(f"| {f} | {cell(s['put_data'])} | {cell(s['split_put_bare'])} | {cell(s['split_store_call'])} | {cell(s['split_meta_convert'])} |")
    if server:
        print()
        print("**Redis: what the server does per call** (commands the client sends, from MONITOR; commands "
              "run inside Lua scripts; server-side µs from INFO commandstats)")
        print()
        print("| operation | " + " | ".join(f"{b.name}: sent | in scripts | server µs" for b in fam["redis"] + [control]) + " |")
        print("|---|" + "---|---|---|" * (len(fam["redis"]) + 1))
        for op in ops:
            row = []
            for b in fam["redis"] + [control]:
                v = server.get((b.name, op))
                if v is None:
                    row.append(" |  | ")
                else:
                    cmds = ", ".join(f"{n} {c:.3g}" for n, c in sorted(v["sent"].items()) if c >= 0.05)
                    row.append(f"{v['sent_per_op']:.3g} ({cmds}) | {v['in_scripts_per_op']:.3g} | {v['server_us_per_op']:.1f}")
            print(f"| {OP_LABELS[op].format(total=f'{2 * ds.n:,}').split(';')[0]} | " + " | ".join(row) + " |")
    if threaded:
        print()
        print(f"**Threads: get hits, total ops/s, 1 thread → {a.threads} threads** ({tsecs:g} s each)")
        print()
        print("| backend | 2 KB data | scaling | 50 KB page | scaling |")
        print("|---|---|---|---|---|")
        for f in [x for x in ("memory", "redis") if x in fam]:
            for b in fam[f]:
                d1, dn = threaded[(b.name, "get_data")]
                p1, pn = threaded[(b.name, "get_page")]
                print(f"| {b.name} | {d1:,.0f} → {dn:,.0f} | {dn / d1:.2f}x | {p1:,.0f} → {pn:,.0f} | {pn / p1:.2f}x |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(all_json, fh, indent=1, default=str)
    for bs in fam.values():
        for b in bs:
            b.close()


if __name__ == "__main__":
    main()
