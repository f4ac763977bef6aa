"""mizan-cache: the Mizan cache protocol for Django origins.

The same implementation as the Mizan render node (the Rust crate ``mizan-cache``): the same
keys, metadata, freshness and purges, over memory (this process), SQLite or Redis. An origin
and its render nodes that open the same SQLite file or Redis, with the same site and secret,
share one cache: the origin can write data the node renders from, and purge pages the node
stored. See docs/python.md; ``mizan_cache.django`` holds the Django integration.
"""

from ._native import (
    EXAMPLE_SECRET,
    Cache,
    Entry,
    Keys,
    dependency_tags,
    invalidate_header,
    jcs,
    now_ms,
    parse_invalidate,
    purge_tags,
)
from .errors import (
    ConfigError,
    MetadataError,
    MizanCacheError,
    NoSecret,
    SecretError,
    SignatureError,
    StoreCorrupt,
    StoreUnavailable,
)

__all__ = [
    "EXAMPLE_SECRET",
    "Cache",
    "Entry",
    "Keys",
    "dependency_tags",
    "invalidate_header",
    "jcs",
    "now_ms",
    "parse_invalidate",
    "purge_tags",
    "ConfigError",
    "MetadataError",
    "MizanCacheError",
    "NoSecret",
    "SecretError",
    "SignatureError",
    "StoreCorrupt",
    "StoreUnavailable",
]
