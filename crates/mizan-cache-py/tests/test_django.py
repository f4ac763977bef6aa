"""mizan_cache.django: context functions served under the origin protocol with their data
cached under the cache protocol, and mutations that purge what they change (in the origin's
cache, and for the node through X-Mizan-Invalidate)."""

from __future__ import annotations

import json
from collections import Counter

import django
import pytest
from django.conf import settings

SECRET = "mizan-python-test-secret-0123456789abcdef"

if not settings.configured:
    settings.configure(
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["testserver"],
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        MIZAN_CACHE={"URL": "memory", "SITE": "example", "SECRET": SECRET},
    )
    django.setup()

from django.http import HttpResponse, JsonResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402

import mizan_cache  # noqa: E402
from mizan_cache import django as mizan  # noqa: E402

CALLS: Counter = Counter()
PRICES = {1: 10.0, 2: 20.0}
# Runs inside product_detail's function when set: a purge racing the computation.
DURING = []


@mizan.context("product_detail", ttl=60, swr=300, sie=86400)
def product_detail(request, params):
    CALLS["product_detail"] += 1
    if DURING:
        DURING.pop()()
    product_id = params.get("id")
    if product_id not in PRICES:
        raise mizan.ContextError(404, "NotFound", f"No product with id {product_id}")
    if product_id == 2 and request.GET.get("private"):
        response = JsonResponse({"data": {"id": 2}})
        response["Cache-Control"] = "private"
        return response
    return {"id": product_id, "price": PRICES[product_id]}


@mizan.context("cart", cache=False)
def cart(request, params):
    CALLS["cart"] += 1
    return {"user": request.COOKIES.get("user")}


@mizan.invalidates(lambda request, product_id: [("product_detail", {"id": product_id}), "product_list"])
def update(request, product_id):
    if product_id not in PRICES:
        return HttpResponse(status=404)
    PRICES[product_id] = json.loads(request.body)["price"]
    return JsonResponse({"ok": True})


@mizan.invalidates(lambda request, slug: [("product_detail", {"slug": slug}), ("product_list", {"tag": [1, 2]})])
def rename(request, slug):
    return HttpResponse(status=302, headers={"Location": "/done"})


@mizan.invalidates(target for target in ["product_list"])
def once_a_generator(request):
    return HttpResponse("ok")


def soft_touch(request):
    response = HttpResponse("ok")
    response["X-Mizan-Invalidate"] = "banner"
    return mizan.invalidate(response, ("product_detail", {"id": 1}, "soft"))


urlpatterns = [
    path("_mizan/ctx/<str:context>", mizan.context_view),
    path("api/products/<int:product_id>", update),
    path("api/touch", soft_touch),
    path("api/rename/<str:slug>", rename),
    path("api/generator", once_a_generator),
]


@pytest.fixture(autouse=True)
def fresh():
    CALLS.clear()
    PRICES.update({1: 10.0, 2: 20.0})
    DURING.clear()
    mizan.reset_cache()
    yield
    mizan.reset_cache()


def ctx(client, context, params, **extra):
    return client.get(f"/_mizan/ctx/{context}", {"params": json.dumps(params), **extra})


def test_cached_context_data_is_stored_as_the_node_stores_it():
    client = Client()
    first = ctx(client, "product_detail", {"id": 1})
    assert first.status_code == 200 and json.loads(first.content) == {"data": {"id": 1, "price": 10.0}}
    second = ctx(client, "product_detail", {"id": 1})
    assert json.loads(second.content) == json.loads(first.content)
    assert CALLS["product_detail"] == 1, "the second answer came from the cache"
    cache = mizan.get_cache()
    entry = cache.get(mizan_cache.Keys(SECRET).data_key("product_detail", {"id": 1}))
    assert entry.kind == "data" and entry.json() == {"id": 1, "price": 10.0}
    meta = entry.meta
    assert (meta["ttl_s"], meta["swr_s"], meta["sie_s"]) == (60, 300, 86400)
    assert meta["deps"] == [{"context": "product_detail", "params": {"id": 1}}]
    assert set(meta["generation"]) == {"c:product_detail", "c:product_detail:id=1"}


def test_cache_false_is_never_cached_and_answers_no_store():
    client = Client()
    client.cookies["user"] = "u1"
    for _ in range(2):
        answer = ctx(client, "cart", {})
        assert answer.status_code == 200 and answer["Cache-Control"] == "no-store"
        assert json.loads(answer.content) == {"data": {"user": "u1"}}
    assert CALLS["cart"] == 2
    assert mizan.get_cache().get(mizan_cache.Keys(SECRET).data_key("cart", {})) is None


def test_errors_and_own_responses_are_answered_and_not_cached():
    client = Client()
    missing = ctx(client, "product_detail", {"id": 9})
    assert missing.status_code == 404
    assert json.loads(missing.content) == {"error": {"type": "NotFound", "status": 404, "message": "No product with id 9"}}
    ctx(client, "product_detail", {"id": 9})
    assert CALLS["product_detail"] == 2, "an error is not cached"
    private = ctx(client, "product_detail", {"id": 2}, private="1")
    assert private["Cache-Control"] == "private"
    assert mizan.get_cache().get_data("product_detail", {"id": 2}) is None
    assert ctx(client, "nope", {}).status_code == 404
    bad = client.get("/_mizan/ctx/product_detail", {"params": "[1]"})
    assert bad.status_code == 400 and json.loads(bad.content)["error"]["type"] == "BadParams"


def test_a_mutation_purges_the_origin_cache_and_tells_the_node():
    client = Client()
    ctx(client, "product_detail", {"id": 1})
    ctx(client, "product_detail", {"id": 2})
    changed = client.post("/api/products/1", json.dumps({"price": 11.0}), content_type="application/json")
    assert changed.status_code == 200
    assert changed["X-Mizan-Invalidate"] == "product_detail;id=1, product_list"
    assert json.loads(ctx(client, "product_detail", {"id": 1}).content)["data"]["price"] == 11.0
    ctx(client, "product_detail", {"id": 2})
    assert CALLS["product_detail"] == 3, "1, 2, then 1 again: product 2 stayed cached"
    refused = client.post("/api/products/7", "{}", content_type="application/json")
    assert refused.status_code == 404 and "X-Mizan-Invalidate" not in refused


def test_invalidate_appends_to_a_header_already_set_and_soft_purges_mark_stale():
    client = Client()
    ctx(client, "product_detail", {"id": 1})
    touched = client.get("/api/touch")
    assert touched["X-Mizan-Invalidate"] == "banner, product_detail;id=1;soft"
    entry = mizan.get_cache().get(mizan_cache.Keys(SECRET).data_key("product_detail", {"id": 1}))
    assert entry is not None and entry.freshness() == "stale-while-revalidate"
    ctx(client, "product_detail", {"id": 1})
    assert CALLS["product_detail"] == 2, "a stale entry is computed again"


def test_a_purge_while_the_data_is_computed_keeps_the_old_data_out():
    """The generations are read before the function runs: a mutation that purges while it
    computes (here, from inside it) drops the put of what it computed."""
    client = Client()
    DURING.append(lambda: mizan.get_cache().purge("product_detail", {"id": 1}))
    assert ctx(client, "product_detail", {"id": 1}).status_code == 200
    assert mizan.get_cache().get_data("product_detail", {"id": 1}) is None, "the racing put was dropped"
    ctx(client, "product_detail", {"id": 1})
    ctx(client, "product_detail", {"id": 1})
    assert CALLS["product_detail"] == 2, "then stored as usual"


def test_the_origin_answers_when_its_cache_goes_away(tmp_path, unique_site):
    from conftest import _start_server

    server = _start_server(tmp_path)
    url = f"redis://127.0.0.1:{server.port}/0"
    with override_settings(MIZAN_CACHE={"URL": url, "SITE": unique_site("down"), "SECRET": SECRET}):
        mizan.reset_cache()
        client = Client()
        ctx(client, "product_detail", {"id": 1})
        server.stop()
        answer = ctx(client, "product_detail", {"id": 2})
        assert answer.status_code == 200 and json.loads(answer.content)["data"]["id"] == 2
        ctx(client, "product_detail", {"id": 1})
        assert CALLS["product_detail"] == 3, "answered from the function while the cache is gone"
        changed = client.post("/api/products/1", json.dumps({"price": 12.0}), content_type="application/json")
        assert changed["X-Mizan-Invalidate"] == "product_detail;id=1, product_list", "the node is still told"


def test_the_origin_starts_and_answers_while_its_redis_is_down(caplog):
    """Redis down when the process starts: contexts are answered from their functions, the
    open is tried again only after RETRY_S (not once per request), mutations still tell the node."""
    from conftest import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with override_settings(MIZAN_CACHE={"URL": url, "SITE": "example", "SECRET": SECRET}):
        mizan.reset_cache()
        client = Client()
        for _ in range(3):
            answer = ctx(client, "product_detail", {"id": 1})
            assert answer.status_code == 200 and json.loads(answer.content)["data"]["id"] == 1
        assert CALLS["product_detail"] == 3
        attempts = [r for r in caplog.records if "Connection refused" in r.getMessage()]
        assert len(attempts) == 1, "one connection attempt; the next requests went on without waiting"
        changed = client.post("/api/products/1", json.dumps({"price": 12.0}), content_type="application/json")
        assert changed["X-Mizan-Invalidate"] == "product_detail;id=1, product_list"


def test_requests_with_credentials_neither_read_nor_write_the_cache():
    """As the node: an answer asked for with a cookie or Authorization may be that
    requester's own (a context wrongly declared cached), so it is never shared."""
    client = Client()
    ctx(client, "product_detail", {"id": 1})  # stored
    client.cookies["sessionid"] = "alice"
    ctx(client, "product_detail", {"id": 1})
    assert CALLS["product_detail"] == 2, "not read from the cache"
    mizan.get_cache().purge("product_detail")
    ctx(client, "product_detail", {"id": 1})
    assert mizan.get_cache().get_data("product_detail", {"id": 1}) is None, "not written"
    ctx(Client(HTTP_AUTHORIZATION="Bearer x"), "product_detail", {"id": 1})
    assert CALLS["product_detail"] == 4


def test_a_mutation_whose_targets_the_header_cannot_carry_still_purges():
    """The data has changed when invalidate runs: it never fails the response. The origin's
    cache is purged exactly; the node is told to purge the whole context instead."""
    cache = mizan.get_cache()
    stored = cache.put("mz1:p:slug", b"x", {"kind": "page", "ttl_s": 60, "deps": [{"context": "product_detail", "params": {"slug": "café"}}]})
    assert stored
    answer = Client().post("/api/rename/café")
    assert answer.status_code == 302, "a redirect (POST-redirect-GET) purges too"
    assert answer["X-Mizan-Invalidate"] == "product_detail, product_list"
    assert cache.get("mz1:p:slug") is None


def test_static_targets_given_as_a_generator_serve_every_request():
    for _ in range(2):
        assert Client().post("/api/generator")["X-Mizan-Invalidate"] == "product_list"


def test_a_purge_is_repeated_when_the_transaction_commits():
    """A read between the purge and the commit computes from the data before the change; the
    purge at commit takes what it stored away."""
    from django.db import transaction

    client = Client()
    cache = mizan.get_cache()
    with transaction.atomic():
        mizan.invalidate(HttpResponse(), ("product_detail", {"id": 1}))
        ctx(client, "product_detail", {"id": 1})  # the old data, read before the commit
        assert cache.get_data("product_detail", {"id": 1}) is not None
    assert cache.get_data("product_detail", {"id": 1}) is None, "purged again at commit"


def test_async_functions_and_views_are_refused_and_nan_is_not_sent():
    from django.core.exceptions import ImproperlyConfigured

    async def later(request, params):
        return {}

    with pytest.raises(ImproperlyConfigured, match="async"):
        mizan.context("later")(later)
    with pytest.raises(ImproperlyConfigured, match="async"):
        mizan.invalidates(["product_list"])(later)
    mizan.context("not_a_number")(lambda request, params: {"x": float("nan")})
    with pytest.raises(ValueError, match="not JSON compliant"):
        ctx(Client(), "not_a_number", {})


def test_bad_settings_are_refused_with_what_is_wrong(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.delenv("MIZAN_SECRET", raising=False)

    for config, why in [
        ({"URL": "memory", "SITE": "x", "SECRET": SECRET, "TTL": 5}, "unknown keys: TTL"),
        ({"URL": "memory"}, "MIZAN_SECRET"),
        ({"URL": "nope", "SECRET": SECRET}, "unknown store"),
        ({"URL": "memory", "SECRET": "short"}, "at least 32"),
    ]:
        with override_settings(MIZAN_CACHE=config):
            mizan.reset_cache()
            with pytest.raises(ImproperlyConfigured, match=why):
                mizan.get_cache()
