"""The protocol cases of tests/vectors/cases.json (its ``format`` says what each step does), run
through ``mizan_cache.Cache`` on every backend: memory, SQLite (a file per test), one Redis and
a three-master Redis Cluster (each test under sites of its own). The Rust suite runs the same
file on the same stores (crates/mizan-cache/tests/protocol/cases.rs), so both languages hold
every backend to one behaviour. A failure names the case, the step's index and its op.

Python's ``put`` answers a bool, so a step's ``dropped_by`` (the tag a Rust put names) is not
checked here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mizan_cache import Cache, Keys, dependency_tags, now_ms, purge_tags

REPO = Path(__file__).resolve().parents[3]
CASES_PATH = REPO / "tests" / "vectors" / "cases.json"
FILE = json.loads(CASES_PATH.read_text(encoding="utf-8"))
BACKENDS = ("memory", "sqlite", "redis", "cluster")

# The fields each op may have (as the Rust runner's `deny_unknown_fields`): a typo in the case
# file fails instead of being ignored.
FIELDS = {
    "put": {
        "site", "key", "data", "body", "body_hex", "deps", "meta", "age_s", "stale_ago_s", "generation", "expect",
        "dropped_by",
    },
    "get": {"site", "key", "data", "expect"},
    "present": {"site", "keys", "expect"},
    "purge": {"site", "context", "params", "mode", "as", "expect"},
    "remove": {"site", "key", "data"},
    "generations": {"site", "deps", "tags", "save", "expect"},
    "tags": {"deps", "expect"},
    "purge_tags": {"context", "params", "expect"},
}
GET_FIELDS = {"body", "body_hex", "json", "meta", "stale_at", "freshness", "freshness_in"}


class StepFailed(AssertionError):
    pass


def ensure(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


def same(a, b) -> bool:
    """JSON equality as serde_json's: a bool is not a number, an integer is not a float."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def brief(step: dict) -> str:
    text = json.dumps(step, ensure_ascii=False)
    return text if len(text) <= 160 else text[:160] + "…"


def cases():
    names = set()
    for case in FILE["cases"]:
        assert case["name"] not in names, f"two cases are named {case['name']!r}"
        names.add(case["name"])
        for backend in case.get("backends", BACKENDS):
            assert backend in BACKENDS, f"case {case['name']!r}: unknown backend {backend!r}"
            yield pytest.param(case, backend, id=f"{backend}-{case['name']}")


class Run:
    """One case on one backend: its stores (one per site, all on one backend) and what it saw."""

    def __init__(self, case: dict, stores: dict[str, Cache]):
        self.sites = case.get("sites", ["shop"])
        self.stores = stores
        self.keys = Keys(FILE["secret"])
        self.put_meta: dict[tuple[str, str], dict] = {}
        self.readings: dict[str, dict[str, int]] = {}
        self.purges: dict[str, tuple[int, int]] = {}

    def store(self, step: dict) -> tuple[str, Cache]:
        site = step.get("site", self.sites[0])
        ensure(site in self.stores, f"site {site!r} is not among the case's sites")
        return site, self.stores[site]

    def key(self, step: dict) -> str:
        ensure(("key" in step) != ("data" in step), "give one of key and data")
        if "key" in step:
            return step["key"]
        return self.keys.data_key(step["data"]["context"], step["data"]["params"])

    def operand(self, operand, tag: str) -> int:
        if isinstance(operand, str):
            ensure(tag in self.readings.get(operand, {}), f"no reading {operand!r} of {tag}")
            return self.readings[operand][tag]
        return operand

    def step(self, step: dict) -> None:
        op = step["op"]
        ensure(op in FIELDS, f"unknown op {op!r}")
        unknown = set(step) - FIELDS[op] - {"op"}
        ensure(not unknown, f"unknown fields {sorted(unknown)}")
        getattr(self, op)(copy.deepcopy(step))

    def put(self, step: dict) -> None:
        site, cache = self.store(step)
        key = self.key(step)
        ensure(("body" in step) != ("body_hex" in step), "give one of body and body_hex")
        body = step["body"].encode() if "body" in step else bytes.fromhex(step["body_hex"])
        if "deps" in step:
            deps = step["deps"]
        else:
            ensure("data" in step, "a page needs deps")
            deps = [[step["data"]["context"], step["data"]["params"]]]
        now = now_ms()
        meta = copy.deepcopy(FILE["meta_defaults"])
        if "data" in step:
            meta["kind"] = "data"
        meta.update(step.get("meta", {}))
        meta["key"] = key
        meta["created_at"] = now - step.get("age_s", 0) * 1000
        meta["deps"] = [{"context": c, "params": p} for c, p in deps]
        if "stale_ago_s" in step:
            meta["stale_at"] = now - step["stale_ago_s"] * 1000
        generation = step.get("generation")
        if generation is None:
            generation = cache.generations(dependency_tags([(c, p) for c, p in deps]))
        elif isinstance(generation, str):
            ensure(generation in self.readings, f"no reading {generation!r}")
            generation = self.readings[generation]
        meta["generation"] = dict(generation)
        stored = cache.put(key, body, meta)
        ensure(isinstance(stored, bool), f"put answered {stored!r}, not a bool")
        expect = step.get("expect")
        if expect is not None:
            ensure(stored == (expect == "stored"), f"put: {'stored' if stored else 'dropped'}, expected {expect}")
        if stored:
            self.put_meta[(site, key)] = meta

    def get(self, step: dict) -> None:
        site, cache = self.store(step)
        key = self.key(step)
        ensure("expect" in step, "a get needs expect")
        entry = cache.get(key)
        now = now_ms()
        want = step["expect"]
        if want is None:
            ensure(entry is None, f"{key} is present: {entry!r}")
            return
        ensure(entry is not None, f"{key} is absent")
        unknown = set(want) - GET_FIELDS
        ensure(not unknown, f"unknown expectations {sorted(unknown)}")
        stored = entry.meta
        # The Entry's properties tell what its metadata holds.
        ensure(entry.key == stored["key"] == key, f"Entry.key {entry.key!r}, metadata {stored['key']!r}, read {key!r}")
        ensure(entry.kind == stored["kind"], f"Entry.kind {entry.kind!r}, metadata {stored['kind']!r}")
        ensure(entry.status == stored["status"], f"Entry.status {entry.status!r}")
        ensure(entry.headers == [tuple(h) for h in stored["headers"]], f"Entry.headers {entry.headers!r}")
        ensure(entry.created_at == stored["created_at"], f"Entry.created_at {entry.created_at!r}")
        ensure(entry.stale_at == stored.get("stale_at"), f"Entry.stale_at {entry.stale_at!r}, metadata {stored!r}")
        ensure(isinstance(entry.body, bytes) and len(entry) == len(entry.body), "Entry.body is bytes, len() its size")
        if "body" in want:
            ensure(entry.body == want["body"].encode(), f"body {entry.body!r}, expected {want['body']!r}")
        if "body_hex" in want:
            ensure(entry.body.hex() == want["body_hex"], f"body {entry.body.hex()}, expected {want['body_hex']}")
        if "json" in want:
            got = entry.json()
            ensure(same(got, want["json"]), f"body {got!r}, expected {want['json']!r}")
        put = self.put_meta.get((site, key))
        meta = want.get("meta")
        if meta == "as_put":
            ensure(put is not None, "no stored put of this key")
            expected, actual = dict(put), dict(stored)
            if "stale_at" in want:
                expected.pop("stale_at", None)
                actual.pop("stale_at", None)
            ensure(same(actual, expected), f"metadata {actual!r}, expected {expected!r}")
        elif isinstance(meta, dict):
            for name, value in meta.items():
                ensure(same(stored.get(name), value), f"metadata {name}: {stored.get(name)!r}, expected {value!r}")
        else:
            ensure(meta is None, f"meta: {meta!r}?")
        if "stale_at" in want:
            rule, stale_at = want["stale_at"], entry.stale_at
            if rule is None:
                ensure(stale_at is None, f"stale_at {stale_at}, expected none")
            elif rule == "as_put":
                ensure(put is not None, "no stored put of this key")
                ensure(stale_at == put.get("stale_at"), f"stale_at {stale_at}, put with {put.get('stale_at')}")
            elif isinstance(rule, dict) and list(rule) == ["purge"]:
                ensure(rule["purge"] in self.purges, f"no purge {rule['purge']!r}")
                before, after = self.purges[rule["purge"]]
                ensure(
                    stale_at is not None and before <= stale_at <= after,
                    f"stale_at {stale_at}, expected within purge {rule['purge']!r}: {before}..={after}",
                )
            else:
                raise StepFailed(f"stale_at: {rule!r}?")
        if "freshness" in want:
            got = entry.freshness(now)
            ensure(got == want["freshness"], f"{got} now, expected {want['freshness']}")
        for seconds, freshness in want.get("freshness_in", []):
            got = entry.freshness(now + seconds * 1000)
            ensure(got == freshness, f"{got} in {seconds} s, expected {freshness}")

    def present(self, step: dict) -> None:
        _, cache = self.store(step)
        ensure(len(step["keys"]) == len(step["expect"]), "as many keys as expectations")
        got = [cache.get(k) is not None for k in step["keys"]]
        ensure(got == step["expect"], f"present {got}, expected {step['expect']}")

    def purge(self, step: dict) -> None:
        _, cache = self.store(step)
        name = step.get("as")
        if name is not None:
            # A named purge starts a millisecond after the last named one ended, so a
            # `stale_at` tells which of them set it.
            last = max((after for _, after in self.purges.values()), default=0)
            while now_ms() <= last:
                pass
        before = now_ms()
        n = cache.purge(step["context"], step.get("params"), mode=step.get("mode", "hard"))
        after = now_ms()
        if name is not None:
            self.purges[name] = (before, after)
        ensure(isinstance(n, int) and not isinstance(n, bool), f"purge answered {n!r}")
        ensure(n == step["expect"], f"purged {n}, expected {step['expect']}")

    def remove(self, step: dict) -> None:
        _, cache = self.store(step)
        ensure(cache.remove(self.key(step)) is None, "remove answers None")

    def generations(self, step: dict) -> None:
        _, cache = self.store(step)
        ensure(("deps" in step) != ("tags" in step), "give one of deps and tags")
        tags = dependency_tags([(c, p) for c, p in step["deps"]]) if "deps" in step else step["tags"]
        got = cache.generations(tags)
        ensure(isinstance(got, dict) and set(got) == set(tags), f"answered {got!r} for {tags!r}")
        ensure(all(type(g) is int for g in got.values()), f"generations are ints: {got!r}")
        for tag, rule in (step.get("expect") or {}).items():
            ensure(tag in got, f"{tag} was not asked")
            g = got[tag]
            if isinstance(rule, int):
                ensure(g == rule, f"{tag} is {g}, expected {rule}")
            else:
                ensure(len(rule) == 1 and set(rule) <= {"gt", "eq"}, f"give one of gt and eq: {rule!r}")
                if "gt" in rule:
                    than = self.operand(rule["gt"], tag)
                    ensure(g > than, f"{tag} is {g}, expected more than {than} ({rule['gt']!r})")
                else:
                    to = self.operand(rule["eq"], tag)
                    ensure(g == to, f"{tag} is {g}, expected {to} ({rule['eq']!r})")
        if "save" in step:
            self.readings[step["save"]] = got

    def tags(self, step: dict) -> None:
        got = dependency_tags([(c, p) for c, p in step["deps"]])
        ensure(got == step["expect"], f"tags {got!r}, expected {step['expect']!r}")

    def purge_tags(self, step: dict) -> None:
        got = purge_tags(step["context"], step.get("params"))
        ensure(sorted(got) == sorted(step["expect"]), f"purge tags {got!r}, expected {step['expect']!r}")


def open_stores(request, backend: str, sites: list[str], unique_site, tmp_path) -> dict[str, Cache]:
    """Fresh stores of ``sites`` on one backend: a SQLite file of the test's own; on Redis,
    sites no other test uses."""
    if backend == "memory":
        return {site: Cache.from_url("memory", site=site, memory_mb=64) for site in sites}
    if backend == "sqlite":
        path = tmp_path / "cases.db"
        return {site: Cache.from_url(f"sqlite:{path}", site=site) for site in sites}
    if backend == "redis":
        url = request.getfixturevalue("redis_server").url(0)
    else:
        url = request.getfixturevalue("redis_cluster").url()
    return {site: Cache.from_url(url, site=unique_site(site)) for site in sites}


@pytest.mark.parametrize(("case", "backend"), list(cases()))
def test_case(case, backend, request, unique_site, tmp_path):
    stores = open_stores(request, backend, case.get("sites", ["shop"]), unique_site, tmp_path)
    expected_backend = "redis" if backend == "cluster" else backend
    for site, cache in stores.items():
        assert cache.backend == expected_backend, f"{site}: {cache.backend}"
    run = Run(case, stores)
    for i, step in enumerate(case["steps"]):
        try:
            run.step(step)
        except StepFailed as e:
            where = f"case {case['name']} on {backend}, step {i} ({step.get('op')})"
            pytest.fail(f"{where}: {e}\n    {brief(step)}", pytrace=False)


def test_the_case_file_is_well_formed():
    all_cases = FILE["cases"]
    assert len(all_cases) >= 25
    for case in all_cases:
        assert case["steps"] and case.get("backends", BACKENDS), case["name"]
        assert set(case) <= {"name", "about", "sites", "backends", "steps"}, case["name"]
        for i, step in enumerate(case["steps"]):
            assert step.get("op") in FIELDS, f"{case['name']} step {i}"
            assert not set(step) - FIELDS[step["op"]] - {"op"}, f"{case['name']} step {i}: {brief(step)}"
            if "site" in step:
                assert step["site"] in case.get("sites", ["shop"]), f"{case['name']} step {i}"


def test_entry_meta_is_json_as_stored():
    """``Entry.meta`` is "the whole metadata, as stored" and typed ``dict[str, JSON]`` (the stub:
    dict, list, str, int, float, bool or None), so it equals the stored JSON parsed."""
    cache = Cache.from_url("memory")
    meta = {"kind": "page", "ttl_s": 60, "deps": [{"context": "c", "params": {}}], "headers": [["content-type", "x"]]}
    assert cache.put("mz1:p:00", b"x", meta)
    got = cache.get("mz1:p:00").meta
    assert same(got, json.loads(json.dumps(got))), f"not plain JSON: headers {got['headers']!r}"
