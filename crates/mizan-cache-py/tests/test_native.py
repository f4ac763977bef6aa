"""What the Python face adds to the protocol: errors as exceptions that say what was wrong,
the GIL released while a store waits, a Cache used from many threads and after fork, the
header builder and signatures agreeing with the node's parser and verifier, and the wheel
installing into a fresh venv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

import mizan_cache
from conftest import REPO, redis_command
from mizan_cache import Cache, Keys

SECRET = "mizan-python-test-secret-0123456789abcdef"


def test_errors_name_what_was_wrong(tmp_path):
    with pytest.raises(mizan_cache.SecretError, match="at least 32"):
        Keys("short")
    with pytest.raises(mizan_cache.ConfigError, match="needs the database file's path"):
        Cache("sqlite:")
    with pytest.raises(mizan_cache.SecretError, match="example secret"):
        Keys(mizan_cache.EXAMPLE_SECRET)
    Keys(mizan_cache.EXAMPLE_SECRET, dev=True)
    with pytest.raises(mizan_cache.ConfigError, match='unknown store "mysql://…"') as refused:
        Cache("mysql://root:hunter2@db/x")
    assert "hunter2" not in str(refused.value), "no credentials in errors"
    with pytest.raises(mizan_cache.StoreUnavailable) as down:
        Cache("redis://:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in str(down.value) and isinstance(down.value, ConnectionError)
    with pytest.raises(mizan_cache.ConfigError, match="site id"):
        Cache(f"sqlite:{tmp_path / 'c.db'}", site="a:b")
    not_a_db = tmp_path / "not.db"
    not_a_db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(mizan_cache.StoreCorrupt, match=str(not_a_db)):
        Cache(f"sqlite:{not_a_db}")
    cache = Cache()
    with pytest.raises(mizan_cache.NoSecret):
        cache.data_key("product_list")
    with pytest.raises(mizan_cache.MetadataError, match=r"metadata\.ttl_s"):
        cache.put("k", b"x", {"kind": "page", "ttl_s": "soon", "deps": []})
    with pytest.raises(mizan_cache.MetadataError, match=r"metadata\.deps\[0\]: missing field `context`"):
        cache.put("k", b"x", {"kind": "page", "ttl_s": 1, "deps": [{"params": {}}]})
    with pytest.raises(mizan_cache.MetadataError, match="put under"):
        cache.put("k", b"x", {"key": "other", "kind": "page", "ttl_s": 1, "deps": []})
    with pytest.raises(mizan_cache.MetadataError, match="params.id is of type object, which JSON cannot hold"):
        cache.purge("product_detail", {"id": object()})
    with pytest.raises(mizan_cache.MetadataError, match=r"params\.tags\[1\] is of type set"):
        cache.purge("product_detail", {"tags": ["a", {1}]})
    assert cache.purge("product_detail", {"id": 2**70}) == 0, "past 64 bits: a double, as JSON.parse reads it"
    deep: list = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(mizan_cache.MetadataError, match=r"params\.x(\[0\]){128} nests deeper than 128 levels"):
        cache.purge("product_detail", {"x": deep})
    shallow: list = []
    for _ in range(127):
        shallow = [shallow]
    assert cache.purge("product_detail", {"x": shallow}) == 0, "128 levels are taken"
    with pytest.raises(TypeError, match="mapping"):
        cache.purge("product_detail", [1, 2])
    with pytest.raises(ValueError, match="hard.*soft"):
        cache.purge("product_detail", mode="gentle")
    with pytest.raises(mizan_cache.MetadataError, match=r"metadata\.v is 2"):
        cache.put("k", b"x", {"v": 2, "kind": "page", "ttl_s": 1, "deps": []})
    keyed = Cache(secret=SECRET)
    with pytest.raises(mizan_cache.MetadataError, match="ttl is -1"):
        keyed.put_data("product_list", None, b"[]", ttl=-1, generations={})
    # Any mapping where a mapping is asked for (Django's request.headers is one).
    from types import MappingProxyType

    keys = Keys(SECRET)
    fr = keys.page_key("/p", site="s", declared_vary=["accept-language"], headers=MappingProxyType({"Accept-Language": "fr"}))
    assert fr == keys.page_key("/p", site="s", declared_vary=["accept-language"], headers={"accept-language": "fr"})
    assert fr != keys.page_key("/p", site="s", declared_vary=["accept-language"], headers={"accept-language": "de"})
    assert keyed.put_data("product_list", None, b"[]", ttl=1, generations=MappingProxyType({}))
    with pytest.raises(mizan_cache.MetadataError, match="not JSON"):
        keyed.put_data("product_list", None, b"{not json", ttl=60, generations={})


def test_put_fills_the_metadata_defaults_and_keeps_unknown_fields():
    cache = Cache()
    assert cache.put("mz1:p:1", "<p>é</p>", {"kind": "page", "ttl_s": 60, "deps": [], "x_future": {"kept": True}})
    entry = cache.get("mz1:p:1")
    assert entry.body == "<p>é</p>".encode() and entry.status == 200 and entry.kind == "page"
    assert entry.meta["x_future"] == {"kept": True} and entry.meta["v"] == 1
    assert entry.freshness() == "fresh"
    assert entry.freshness(entry.created_at + 60_000) == "expired"
    assert cache.get("mz1:p:missing") is None


def test_the_header_builder_writes_what_the_parser_reads():
    targets = [("product_detail", {"id": 42}), "product_list", ("cart", {"user": "u1"}, "soft"), ("search", {"q": "a, b", "exact": True})]
    header = mizan_cache.invalidate_header(targets)
    assert header == 'product_detail;id=42, product_list, cart;user="u1";soft, search;exact;q="a, b"'
    purges, skipped = mizan_cache.parse_invalidate(header)
    assert skipped == []
    assert purges == [
        ("product_detail", {"id": 42}, "hard"),
        ("product_list", {}, "hard"),
        ("cart", {"user": "u1"}, "soft"),
        ("search", {"exact": True, "q": "a, b"}, "hard"),
    ]
    assert mizan_cache.invalidate_header([]) == ""
    for bad, why in [
        ([("p", {"q": "café"})], "printable ASCII"),
        ([("p", {"q": [1]})], "objects, arrays"),
        ([("p", {"soft": True})], "mode's name"),
        (["product-list"], "not a context name"),
    ]:
        with pytest.raises(ValueError, match=why):
            mizan_cache.invalidate_header(bad)
    with pytest.raises(TypeError, match="not one string"):
        mizan_cache.invalidate_header("product_list")


def test_signatures_are_the_nodes():
    keys = Keys(SECRET)
    body, headers = keys.purge_request([("product_detail", {"id": 9})], mode="soft", t=1_700_000_000)
    assert json.loads(body) == {"purge": [{"context": "product_detail", "params": {"id": 9}}], "mode": "soft"}
    assert headers["x-mizan-signature"] == keys.sign(body, 1_700_000_000)
    keys.verify(headers["x-mizan-signature"], body, now=1_700_000_100)
    with pytest.raises(mizan_cache.SignatureError):
        keys.verify(headers["x-mizan-signature"], body + b" ", now=1_700_000_100)
    with pytest.raises(mizan_cache.SignatureError):
        keys.verify(headers["x-mizan-signature"], body, now=1_700_000_000 + 301)
    with pytest.raises(mizan_cache.SignatureError):
        Keys(SECRET.upper()).verify(headers["x-mizan-signature"], body, now=1_700_000_000)
    with pytest.raises(ValueError, match="one mode"):
        keys.purge_request([("cart", {}, "soft")])


def test_store_calls_release_the_gil(redis_server, unique_site):
    """A get waiting on a paused Redis must let other Python threads run meanwhile. Redis is
    paused for 1.5 s (then answers by itself); if the get held the GIL, this thread's short
    loop could only finish after the get returned, and the worker would be done by then."""
    cache = Cache(redis_server.url(), site=unique_site("gil"))
    cache.get("mz1:p:warm")  # connected
    started = threading.Event()
    answered = []

    def blocked():
        started.set()
        answered.append(cache.get("mz1:p:0"))

    worker = threading.Thread(target=blocked)
    redis_command(redis_server.port, "CLIENT", "PAUSE", "1500", "ALL")
    worker.start()
    started.wait()
    total = sum(range(1_000_000))  # pure Python: needs the GIL throughout (~30 ms)
    still_waiting = worker.is_alive()
    worker.join()
    assert still_waiting, "the get held the GIL while Redis was paused"
    assert total > 0 and answered == [None], "and it answered once Redis did"


def test_one_cache_serves_many_threads(redis_server, unique_site):
    cache = Cache(redis_server.url(), site=unique_site("threads"), secret=SECRET)
    errors = []

    def work(n):
        try:
            for i in range(50):
                params = {"id": n * 1000 + i}
                g = cache.data_generations("product_detail", params)
                assert cache.put_data("product_detail", params, json.dumps(params), ttl=60, generations=g)
                assert json.loads(cache.get_data("product_detail", params)) == params
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert cache.purge("product_detail") == 400


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_opens_its_own_store(redis_server, unique_site, tmp_path):
    """gunicorn --preload: the Cache is opened in the parent and used in each worker."""
    site = unique_site("fork")
    for url in (redis_server.url(), f"sqlite:{tmp_path / 'fork.db'}"):
        cache = Cache(url, site=site)
        assert cache.put("mz1:p:parent", b"from the parent", {"kind": "page", "ttl_s": 60, "deps": [{"context": "c", "params": {}}]})
        pid = os.fork()
        if pid == 0:  # the child: exit status 0 only if everything held
            ok = False
            try:
                # Several threads use it first at once: one reopens the store while the others
                # wait for it (with the GIL released, or they would deadlock).
                results = []
                threads = [threading.Thread(target=lambda: results.append(cache.get("mz1:p:parent"))) for _ in range(8)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                ok = [e.body for e in results] == [b"from the parent"] * 8
                ok = ok and cache.put("mz1:p:child", b"from the child", {"kind": "page", "ttl_s": 60, "deps": []})
            finally:
                os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, f"the child failed on {url}"
        assert cache.get("mz1:p:child").body == b"from the child"
        assert cache.purge("c") == 1


def test_the_wheel_installs_into_a_fresh_venv(tmp_path):
    wheels = sorted((REPO / "target" / "wheels").glob("mizan_cache-*.whl"))
    assert wheels, "no wheel in target/wheels: scripts/setup builds it (maturin build --release)"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-index", "--disable-pip-version-check", "--quiet", str(wheels[-1])],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    script = (
        "import mizan_cache, pathlib\n"
        "c = mizan_cache.Cache('memory', secret='x' * 32)\n"
        "g = c.data_generations('a', {'id': 1})\n"
        "assert c.put_data('a', {'id': 1}, b'[1]', ttl=5, generations=g)\n"
        "assert c.get_data('a', {'id': 1}) == b'[1]'\n"
        "root = pathlib.Path(mizan_cache.__file__).parent\n"
        "assert (root / 'py.typed').exists() and (root / '_native.pyi').exists()\n"
        "print('ok')\n"
    )
    run = subprocess.run([str(python), "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert run.stdout.strip() == "ok", run.stderr
