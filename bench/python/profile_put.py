"""A loop of mizan_cache puts for `perf record` (bench/RESULTS.md, issue 20: where a put goes).

The symbols need the profiling build of the extension (release code, line tables, not
stripped) in place of the installed one, in a scratch directory:

    . scripts/env.sh
    PYO3_PYTHON=$PWD/fixtures/origin/.venv/bin/python cargo build --profile profiling -p mizan-cache-py
    mkdir -p bench/out/python/prof/mizan_cache
    cp crates/mizan-cache-py/python/mizan_cache/*.py bench/out/python/prof/mizan_cache/
    cp target/profiling/lib_native.so bench/out/python/prof/mizan_cache/_native.cpython-311-x86_64-linux-gnu.so
    PYTHONPATH=bench/out/python/prof perf record -F 4000 -g --call-graph dwarf,16384 -o bench/out/python/put.perf \\
        fixtures/origin/.venv/bin/python bench/python/profile_put.py --seconds 8
    perf report -i bench/out/python/put.perf --children --sort symbol --stdio -g none | grep -E 'pymethod_put|metadata_for|depythonize|dataclass|put_entry|MemoryStore|moka'

Default: the memory store, a 2,000-byte data entry with the metadata bench.py puts.
"""

import argparse
import time

import mizan_cache

ap = argparse.ArgumentParser()
ap.add_argument("--store", default="memory", help="memory (default), sqlite:<path> or redis://...")
ap.add_argument("--seconds", type=float, default=8.0)
a = ap.parse_args()

c = mizan_cache.Cache(a.store, secret=mizan_cache.EXAMPLE_SECRET, dev=True)
keys = [c.data_key("product_detail", {"id": i}) for i in range(1000)]
body = b"x" * 2000
metas = []
for i, k in enumerate(keys):
    gens = c.generations(mizan_cache.dependency_tags([("product_detail", {"id": i})]))
    metas.append({"kind": "data", "key": k, "ttl_s": 3600, "swr_s": 60,
                  "deps": [{"context": "product_detail", "params": {"id": i}}],
                  "headers": [["content-type", "application/json"]], "generation": gens})
put = c.put
n = 0
end = time.monotonic() + a.seconds
while time.monotonic() < end:
    for i in range(1000):
        put(keys[i], body, metas[i])
    n += 1000
print(f"{n} puts, {n / a.seconds:,.0f}/s")
