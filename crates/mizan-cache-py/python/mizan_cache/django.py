"""Django integration: context functions served under the origin protocol with their data
cached under the cache protocol, and mutations that purge what they change.

Settings (all optional)::

    MIZAN_CACHE = {
        "URL": "redis://127.0.0.1:6379/0",  # or "memory" (the default), "sqlite:/path/cache.db"
        "SITE": "shop",                     # the manifest's "site": keys are namespaced by it
        "SECRET": None,                     # default: the MIZAN_SECRET environment variable
        "DEV": False,                       # True accepts the published example secret
        "MEMORY_MB": 256,                   # the bound of the "memory" store
    }

An origin whose ``URL`` names the store its render nodes use (the same Redis, or the same
SQLite file), with the same ``SITE`` and secret, shares one cache with them: data the origin
computed is rendered from without asking it again, and a mutation's purge removes the pages
built from what it changed before its response leaves the origin.

Contexts::

    from mizan_cache.django import context, ContextError

    @context("product_detail", ttl=60, swr=300, sie=86400)
    def product_detail(request, params):
        product = Product.objects.filter(pk=params.get("id")).first()
        if product is None:
            raise ContextError(404, "NotFound", f"No product with id {params.get('id')}")
        return {"id": product.pk, "name": product.name}

    @context("cart", cache=False)  # never cached: Cache-Control: no-store
    def cart(request, params):
        ...

    # urls.py: the origin protocol's endpoint, GET /_mizan/ctx/<context>?params=<JSON>
    path("_mizan/ctx/<str:context>", mizan_cache.django.context_view)

Mutations::

    @invalidates(lambda request, product_id: [("product_detail", {"id": product_id}), "product_list"])
    def update_product(request, product_id):
        ...

or, inside a view, ``invalidate(response, ("product_detail", {"id": 42}))``. Either purges
the origin's cache now and adds the targets to the response's ``X-Mizan-Invalidate``, which
the render node's proxy turns into the same purge of its own store.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_cache_control

from . import EXAMPLE_SECRET, Cache, MizanCacheError, StoreCorrupt, StoreUnavailable, invalidate_header

__all__ = [
    "ContextError",
    "context",
    "context_view",
    "serve",
    "contexts",
    "get_cache",
    "invalidate",
    "invalidates",
]

logger = logging.getLogger("mizan_cache")

Target = Union[str, tuple]
"""A context name, (context, params) or (context, params, "soft")."""


class ContextError(Exception):
    """An error a context function raises for the node to show: ``{"error": {"type", "status",
    "message"}}`` with ``status`` as the HTTP status (what the frontend's ``DjangoError`` reads)."""

    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message

    def response(self) -> HttpResponse:
        body = json.dumps({"error": {"type": self.type, "status": self.status, "message": self.message}})
        return HttpResponse(body, status=self.status, content_type="application/json")


@dataclass(frozen=True)
class Context:
    """A registered context function and how its data is cached."""

    name: str
    function: Callable[[HttpRequest, dict], Any]
    cache: bool
    ttl: int
    swr: int
    sie: int


_contexts: dict[str, Context] = {}


def contexts() -> dict[str, Context]:
    """The registered contexts by name."""
    return dict(_contexts)


def context(name: Optional[str] = None, *, cache: bool = True, ttl: int = 60, swr: int = 0, sie: int = 0):
    """Registers ``function(request, params)`` as the context ``name`` (default: the
    function's name). It returns the context's data (anything ``DjangoJSONEncoder`` writes),
    raises ``ContextError``, or returns an ``HttpResponse`` of its own (never cached: use it
    for an answer meant for one requester, with ``Cache-Control: private``).

    ``cache=True``: the data is cached under its data key for ``ttl`` seconds (then servable
    stale for ``swr``, and on errors for ``sie`` more), the same entry the render node reads
    and writes; the function must then depend on its params alone, never on the requester.
    A request that carries credentials (``Cookie``, ``Authorization``) neither reads nor
    writes the cache, as the node does: its answer may be that requester's.
    ``cache=False``: never cached, answered with ``Cache-Control: no-store``.
    Use the manifest's ``ttl``/``swr``/``sie`` for the context, so both sides agree.
    """

    def register(function):
        key = name or function.__name__
        if inspect.iscoroutinefunction(function):
            raise ImproperlyConfigured(f"context {key!r}: async functions are not supported; write it as a plain function")
        if key in _contexts and _contexts[key].function is not function:
            raise ImproperlyConfigured(f"context {key!r} is registered twice")
        for label, value in (("ttl", ttl), ("swr", swr), ("sie", sie)):
            if not isinstance(value, int) or value < 0:
                raise ImproperlyConfigured(f"context {key!r}: {label} must be a whole number of seconds, not {value!r}")
        _contexts[key] = Context(key, function, cache, ttl, swr, sie)
        return function

    return register


_cache: Optional[tuple[int, Cache]] = None
_cache_lock = threading.Lock()
# While the store could not be opened (Redis down at start-up), until when requests go on
# without it rather than each waiting for a connection attempt.
_down_until = 0.0
RETRY_S = 5.0
"""How long after a failed open the next request tries again."""


def _after_fork_in_child() -> None:
    # A fork while another thread held the lock would leave the child's copy held forever.
    global _cache_lock
    _cache_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def get_cache() -> Cache:
    """This process's cache, opened from ``settings.MIZAN_CACHE`` on first use (and again in a
    process forked after that: gunicorn's workers each open their own). Raises
    ``ImproperlyConfigured`` for bad settings, and ``StoreUnavailable`` while the store cannot
    be reached (tried again ``RETRY_S`` seconds after a failure)."""
    global _cache, _down_until
    pid = os.getpid()
    opened = _cache
    if opened is not None and opened[0] == pid:
        return opened[1]
    with _cache_lock:
        if _cache is None or _cache[0] != pid:
            now = time.monotonic()
            if now < _down_until:
                raise StoreUnavailable(f"the cache could not be opened; trying again in {_down_until - now:.1f} s")
            try:
                _cache = (pid, _open())
            except (StoreUnavailable, StoreCorrupt) as e:
                _down_until = now + RETRY_S
                if isinstance(e, StoreCorrupt):
                    logger.error("mizan_cache: the store cannot be used (%s); going on without it", e)
                raise
        return _cache[1]


def _open() -> Cache:
    config = dict(getattr(settings, "MIZAN_CACHE", None) or {})
    unknown = set(config) - {"URL", "SITE", "SECRET", "DEV", "MEMORY_MB"}
    if unknown:
        raise ImproperlyConfigured(f"MIZAN_CACHE has unknown keys: {', '.join(sorted(unknown))}")
    dev = bool(config.get("DEV", False))
    secret = config.get("SECRET") or os.environ.get("MIZAN_SECRET")
    if not secret:
        if not dev:
            raise ImproperlyConfigured(
                "mizan_cache needs the render node's secret: set MIZAN_SECRET in the environment "
                "(or MIZAN_CACHE['SECRET']), or MIZAN_CACHE['DEV'] = True for the example secret"
            )
        secret = EXAMPLE_SECRET
    try:
        return Cache(
            config.get("URL", "memory"),
            site=config.get("SITE", "default"),
            secret=secret,
            dev=dev,
            memory_mb=int(config.get("MEMORY_MB", 256)),
        )
    except (StoreUnavailable, StoreCorrupt):
        raise  # not a setting's fault: callers go on without the cache
    except MizanCacheError as e:
        raise ImproperlyConfigured(f"MIZAN_CACHE: {e}") from e


def reset_cache() -> None:
    """Forgets this process's cache (tests that change ``settings.MIZAN_CACHE``)."""
    global _cache, _down_until
    with _cache_lock:
        _cache = None
        _down_until = 0.0


def _encode(data: Any) -> bytes:
    # allow_nan=False: NaN and Infinity are not JSON; the node would refuse the answer.
    return json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _data_response(body: bytes) -> HttpResponse:
    return HttpResponse(b'{"data":' + body + b"}", content_type="application/json")


def context_view(request: HttpRequest, context: str) -> HttpResponse:
    """The origin protocol's endpoint: ``GET /_mizan/ctx/<context>?params=<JSON object>``."""
    try:
        params = json.loads(request.GET.get("params", "{}"))
    except ValueError:
        return ContextError(400, "BadParams", "params is not JSON").response()
    if not isinstance(params, dict):
        return ContextError(400, "BadParams", "params must be an object").response()
    return serve(request, context, params)


def serve(request: HttpRequest, name: str, params: dict) -> HttpResponse:
    """The answer of context ``name`` for ``params``: from the cache when fresh there,
    else from its function (and into the cache, unless a purge ran meanwhile)."""
    ctx = _contexts.get(name)
    if ctx is None:
        return ContextError(404, "UnknownContext", f"No context {name}").response()
    if not ctx.cache:
        answer = _run(ctx, request, params)
        response = answer if isinstance(answer, HttpResponse) else _data_response(answer)
        patch_cache_control(response, no_store=True)
        return response
    if _credentials(request):
        # As the node: an answer asked for with credentials may be the requester's own, and a
        # shared entry is never read for it nor written from it.
        answer = _run(ctx, request, params)
        return answer if isinstance(answer, HttpResponse) else _data_response(answer)
    cache: Optional[Cache] = None
    generations = None
    try:
        cache = get_cache()
        body = cache.get_data(name, params)
        if body is not None:
            return _data_response(body)
        # Read before the data is computed: a purge that runs while it is computed moves
        # one of these, and the put below is then dropped instead of storing old data.
        generations = cache.data_generations(name, params)
    except MizanCacheError as e:
        # The cache is an optimisation: the origin answers without it.
        logger.warning("mizan_cache: the cache is unavailable for %s (%s); answering without it", name, e)
    body = _run(ctx, request, params)
    if isinstance(body, HttpResponse):
        return body
    if cache is not None and generations is not None:
        try:
            cache.put_data(name, params, body, ttl=ctx.ttl, swr=ctx.swr, sie=ctx.sie, generations=generations)
        except MizanCacheError as e:
            logger.warning("mizan_cache: could not store %s (%s)", name, e)
    return _data_response(body)


def _credentials(request: HttpRequest) -> bool:
    return bool(request.META.get("HTTP_COOKIE") or request.META.get("HTTP_AUTHORIZATION"))


def _run(ctx: Context, request: HttpRequest, params: dict) -> Union[HttpResponse, bytes]:
    """The function's answer: a response (its own, or for the error it raised), or its data
    encoded as JSON."""
    try:
        data = ctx.function(request, params)
    except ContextError as e:
        return e.response()
    if isinstance(data, HttpResponse):
        return data
    return _encode(data)


def invalidate(response: HttpResponse, *targets: Target, cache: Optional[Cache] = None) -> HttpResponse:
    """Purges ``targets`` from the origin's cache now (and again when the current database
    transaction commits, if one is open), and adds them to ``response``'s
    ``X-Mizan-Invalidate`` for the render node. A target is a context name, (context,
    params) or (context, params, "soft").

    It never raises: the data has changed by the time it runs. A target whose params the
    header cannot carry (a non-ASCII string, a nested value...) is sent as its whole context,
    which purges more but never too little; one that is not a target at all is logged and
    skipped. If the origin's cache cannot be reached, the header still goes out (the node
    purges its store, and retries while that store is down)."""
    purges = []
    for target in targets:
        try:
            purges.append(_target(target))
        except (TypeError, ValueError) as e:
            logger.error("mizan_cache: %r is not a purge target (%s); skipped", target, e)
    if not purges:
        return response

    def purge_origin() -> None:
        for context, params, mode in purges:
            try:
                (cache or get_cache()).purge(context, params, mode=mode)
            except MizanCacheError as e:
                logger.error("mizan_cache: could not purge %s from the origin's cache (%s); the node is still told", context, e)

    purge_origin()
    _on_commit(purge_origin)
    members = []
    for context, params, mode in purges:
        try:
            members.append(invalidate_header([(context, params, mode)]))
        except ValueError as e:
            logger.warning("mizan_cache: %s; the node is told to purge all of %s", e, context)
            try:
                members.append(invalidate_header([(context, {}, mode)]))
            except ValueError as e:
                logger.error("mizan_cache: %s; the node is not told", e)
    header = ", ".join(m for m in members if m)
    if header:
        existing = response.get("X-Mizan-Invalidate")
        response["X-Mizan-Invalidate"] = f"{existing}, {header}" if existing else header
    return response


def _on_commit(purge: Callable[[], None]) -> None:
    """Runs ``purge`` again when the open transaction commits: a read between this purge and
    the commit computes from the data before the change, and stores it with generations
    that already count this purge."""
    try:
        from django.db import connection, transaction

        if connection.in_atomic_block:
            transaction.on_commit(purge)
    except Exception as e:  # noqa: BLE001 - no database configured, or one that cannot say
        logger.debug("mizan_cache: no transaction to purge after (%s)", e)


def _target(target: Target) -> tuple[str, dict, Literal["hard", "soft"]]:
    if isinstance(target, str):
        return target, {}, "hard"
    if not isinstance(target, (tuple, list)) or not 1 <= len(target) <= 3 or not isinstance(target[0], str):
        raise TypeError("a target is a context name, (context, params) or (context, params, mode)")
    context, *rest = target
    params = rest[0] if rest else None
    if params is not None and not isinstance(params, Mapping):
        raise TypeError(f"the params of {context} must be a mapping")
    mode = rest[1] if len(rest) > 1 else "hard"
    if mode == "hard":
        return context, dict(params or {}), "hard"
    if mode == "soft":
        return context, dict(params or {}), "soft"
    raise ValueError(f"the mode of a purge of {context} must be \"hard\" or \"soft\", not {mode!r}")


def invalidates(targets: Union[Iterable[Target], Callable[..., Iterable[Target]]]):
    """A view decorator: when the view answers below 400 (a success, or the redirect of a
    POST-redirect-GET form), ``invalidate`` its response with ``targets``, or with what
    ``targets(request, *args, **kwargs)`` returns (the view's own arguments, e.g.
    ``lambda request, product_id: [("product_detail", {"id": product_id})]``). Errors purge
    nothing."""
    chosen_once = None if callable(targets) else tuple(targets)

    def decorate(view):
        if inspect.iscoroutinefunction(view):
            raise ImproperlyConfigured(f"@invalidates on {view.__name__}: async views are not supported")

        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            response = view(request, *args, **kwargs)
            if response.status_code < 400:
                if chosen_once is not None:
                    chosen = chosen_once
                else:
                    try:
                        chosen = tuple(targets(request, *args, **kwargs))  # type: ignore[operator]
                    except Exception:  # noqa: BLE001 - the change is made: log, never fail it
                        logger.exception("mizan_cache: the targets of %s could not be computed; nothing purged", view.__name__)
                        return response
                invalidate(response, *chosen)
            return response

        return wrapped

    return decorate
