"""The pinned protocol vectors of tests/vectors/keys.json, through ``Keys`` and ``jcs``: what
crates/mizan-cache/tests/protocol/vectors.rs checks, but the subkeys and a page's canonical
parts, which Python does not expose (its page keys cover them).

Params and JCS inputs are JSON text, parsed here with Python's ``json`` as an origin would:
integers stay integers, ``42.0`` is a float.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mizan_cache import Keys, jcs

REPO = Path(__file__).resolve().parents[3]
VECTORS = json.loads((REPO / "tests" / "vectors" / "keys.json").read_text(encoding="utf-8"))
KEYS = Keys(VECTORS["secret"])


def by_name(section: str, field: str):
    return [
        pytest.param(v, id=v["name"])
        for v in VECTORS[section]
    ]


@pytest.mark.parametrize("vector", by_name("jcs", "input"))
def test_jcs(vector):
    assert jcs(json.loads(vector["input"])) == vector["canonical"]


def data_key(vector) -> str:
    return KEYS.data_key(vector["context"], json.loads(vector["params"]))


def page_key(vector) -> str:
    return KEYS.page_key(
        vector["path"],
        site=vector["site"],
        method=vector["method"],
        query=vector["query"],
        declared_query=vector["declared_query"],
        declared_vary=vector["declared_vary"],
        headers=vector["headers"],
    )


@pytest.mark.parametrize("vector", by_name("data", "params"))
def test_data_key(vector):
    assert data_key(vector) == vector["key"]


@pytest.mark.parametrize("vector", [pytest.param(v, id=v["name"]) for v in VECTORS["page"]])
def test_page_key(vector):
    assert page_key(vector) == vector["key"]


def test_keys_marked_same_as_share_a_key_and_the_others_differ():
    computed = {
        "data": {v["name"]: data_key(v) for v in VECTORS["data"]},
        "page": {v["name"]: page_key(v) for v in VECTORS["page"]},
    }
    sames = 0
    for section, keys in computed.items():
        for v in VECTORS[section]:
            if "same_as" in v:
                sames += 1
                same_as = v["same_as"]
                assert keys[v["name"]] == keys[same_as], f"{section} {v['name']!r} must share {same_as!r}'s key"
    every = [k for keys in computed.values() for k in keys.values()]
    assert len(set(every)) == len(every) - sames, "vectors not marked same_as must differ"
