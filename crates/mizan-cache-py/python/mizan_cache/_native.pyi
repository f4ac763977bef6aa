"""Types of the compiled part of mizan_cache (crates/mizan-cache-py/src). See docs/python.md."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Optional, Union, final

# The exceptions are in mizan_cache.errors (plain Python, so that each can also be a
# ValueError, ConnectionError...); all are importable from mizan_cache.

_JSON = Any
"""A JSON value: dict, list, str, int, float, bool or None."""

_Params = Mapping[str, _JSON]
"""A context's params: a JSON object."""

_Target = Union[str, tuple[str, _Params], tuple[str, _Params, Literal["hard", "soft"]]]
"""What a purge names: a context (all of it), or a context and the params an entry's
dependency must contain, optionally with its mode."""

_Freshness = Literal["fresh", "stale-while-revalidate", "stale-if-error", "expired"]

__all__ = [
    "Cache",
    "Entry",
    "Keys",
    "jcs",
    "dependency_tags",
    "purge_tags",
    "invalidate_header",
    "parse_invalidate",
    "now_ms",
    "EXAMPLE_SECRET",
]

EXAMPLE_SECRET: str
"""The published example secret: accepted only with ``dev=True``."""

def jcs(value: _JSON) -> str:
    """RFC 8785 canonical JSON of ``value``: what keys and purge tags are made of."""

def dependency_tags(deps: Iterable[tuple[str, _Params]]) -> list[str]:
    """The purge tags of (context, params) dependencies, sorted and unique:
    ``c:<context>`` and ``c:<context>:<name>=<JCS value>`` for each param."""

def purge_tags(context: str, params: Optional[_Params] = None) -> list[str]:
    """The tags a purge of ``context`` with ``params`` moves (``c:<context>`` when no params)."""

def invalidate_header(targets: Iterable[_Target]) -> str:
    """The ``X-Mizan-Invalidate`` value (an RFC 8941 list) purging ``targets``, e.g.
    ``product_detail;id=42, product_list``. Raises ``ValueError`` for what the header cannot
    carry (a nested param value, a non-ASCII string, a param named ``soft``...)."""

def parse_invalidate(header: str) -> tuple[list[tuple[str, dict[str, _JSON], Literal["hard", "soft"]]], list[str]]:
    """The purges an ``X-Mizan-Invalidate`` value asks for, and why each skipped member was
    skipped (a malformed member never hides the others)."""

def now_ms() -> int:
    """Unix time in milliseconds, the clock metadata is written in."""

@final
class Keys:
    """The keys derived from ``MIZAN_SECRET`` (the secret itself is not kept)."""

    def __new__(cls, secret: Union[str, bytes], *, dev: bool = False) -> "Keys": ...
    def data_key(self, context: str, params: Optional[_Params] = None) -> str:
        """``mz1:d:<hex>``: the key of a context's data for ``params``."""
    def page_key(
        self,
        path: str,
        *,
        site: str,
        method: str = "GET",
        query: str = "",
        declared_query: Optional[Sequence[str]] = None,
        declared_vary: Optional[Sequence[str]] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> str:
        """``mz1:p:<hex>``: the key of a page, from the request as sent (``path`` and ``query``
        raw) and the route's declared query params and vary headers, as the node derives it."""
    def sign(self, body: bytes, t: Optional[int] = None) -> str:
        """The ``X-Mizan-Signature`` value for a ``/_mizan/purge`` body at unix time ``t``
        (seconds; default now): ``t=<t>,v1=<hex HMAC-SHA256>``."""
    def verify(self, signature: Optional[str], body: bytes, now: Optional[int] = None) -> None:
        """Raises ``SignatureError`` unless ``signature`` signs ``body`` within 300 s of ``now``."""
    def purge_request(self, targets: Iterable[_Target], *, mode: Literal["hard", "soft"] = "hard", t: Optional[int] = None) -> tuple[bytes, dict[str, str]]:
        """A signed ``POST /_mizan/purge`` for a node: its body and headers
        (``content-type``, ``x-mizan-signature``)."""

@final
class Entry:
    """A stored response: its body and metadata (docs/protocol.md, "Metadata")."""

    @property
    def key(self) -> str: ...
    @property
    def kind(self) -> Literal["page", "data"]: ...
    @property
    def body(self) -> bytes: ...
    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> list[tuple[str, str]]: ...
    @property
    def created_at(self) -> int: ...
    @property
    def stale_at(self) -> Optional[int]: ...
    @property
    def meta(self) -> dict[str, _JSON]:
        """The whole metadata, as stored (unknown fields included)."""
    def freshness(self, now_ms: Optional[int] = None) -> _Freshness:
        """Where the entry stands at ``now_ms`` (default now) under the protocol's rules."""
    def json(self) -> _JSON:
        """The body parsed as JSON (a data entry's data)."""
    def __len__(self) -> int:
        """The body's length in bytes."""

@final
class Cache:
    """One store under the cache protocol, shared with the render node when both open the
    same SQLite file or Redis (with the same ``site`` and secret).

    ``url``: ``memory`` (the default; this process only), ``sqlite:<path>``, or a Redis URL
    (``redis://``, ``rediss://``, ``redis+cluster://``, ``redis+sentinel://``): the node's
    ``--store`` forms. Store calls release the GIL while they wait; a ``Cache`` may be used
    from many threads, and is reopened in a child after ``fork``.
    """

    def __new__(
        cls,
        url: str = "memory",
        *,
        site: str = "default",
        secret: Union[str, bytes, None] = None,
        dev: bool = False,
        memory_mb: int = 256,
    ) -> "Cache": ...
    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        site: str = "default",
        secret: Union[str, bytes, None] = None,
        dev: bool = False,
        memory_mb: int = 256,
    ) -> "Cache": ...
    @property
    def backend(self) -> Literal["memory", "sqlite", "redis"]: ...
    @property
    def site(self) -> str: ...
    @property
    def keys(self) -> Optional[Keys]:
        """The keys of the secret given, or ``None``."""

    # The protocol's ABI.
    def get(self, key: str) -> Optional[Entry]:
        """The entry under ``key`` whatever its freshness, or ``None``."""
    def put(self, key: str, response: Union[bytes, str], metadata: Mapping[str, _JSON]) -> bool:
        """Stores ``response`` under ``key``; ``False`` when a purge moved a tag's generation
        since the ``generation`` the metadata records (the write is dropped). Defaults:
        ``v`` 1, ``key``, ``status`` 200, ``headers`` [], ``created_at`` now, ``swr_s`` and
        ``sie_s`` 0, ``etag`` None, ``generation`` {}; ``kind``, ``ttl_s`` and ``deps`` are
        required."""
    def purge(self, context: str, params: Optional[_Params] = None, *, mode: Literal["hard", "soft"] = "hard") -> int:
        """Removes (hard) or marks stale (soft) every entry depending on ``context`` whose
        params contain ``params``; returns how many."""
    def generations(self, tags: Iterable[str]) -> dict[str, int]:
        """The current purge generation of each tag (0: never purged)."""
    def remove(self, key: str) -> None: ...

    # Context data, written exactly as the node writes it (needs the secret).
    def data_key(self, context: str, params: Optional[_Params] = None) -> str: ...
    def get_data(self, context: str, params: Optional[_Params] = None) -> Optional[bytes]:
        """The fresh data of ``context`` for ``params`` (its JSON text), or ``None``."""
    def data_generations(self, context: str, params: Optional[_Params] = None) -> dict[str, int]:
        """Read these before computing the data; pass them to ``put_data``."""
    def put_data(
        self,
        context: str,
        params: Optional[_Params],
        data: Union[bytes, str],
        *,
        ttl: int,
        swr: int = 0,
        sie: int = 0,
        generations: Mapping[str, int],
    ) -> bool:
        """Stores ``data`` (JSON text) as the context's data entry; ``False`` when a purge ran
        since ``generations`` were read."""
