"""The exceptions mizan_cache raises. Each is also the built-in error it is a kind of
(``SecretError`` is a ``ValueError``, ``StoreUnavailable`` a ``ConnectionError``...), so code
that catches those keeps working."""

__all__ = [
    "MizanCacheError",
    "SecretError",
    "ConfigError",
    "StoreUnavailable",
    "StoreCorrupt",
    "MetadataError",
    "SignatureError",
    "NoSecret",
]


class MizanCacheError(Exception):
    """Every error this package raises."""


class SecretError(MizanCacheError, ValueError):
    """The secret is missing, shorter than 32 bytes, or the published example one without ``dev=True``."""


class ConfigError(MizanCacheError, ValueError):
    """A store URL, site id or request path that cannot be used (the message says which part)."""


class StoreUnavailable(MizanCacheError, ConnectionError):
    """The store cannot be reached (Redis down, a SQLite file locked past its timeout)."""


class StoreCorrupt(MizanCacheError):
    """The store's file or data is damaged beyond one entry (the message names the file)."""


class MetadataError(MizanCacheError, ValueError):
    """Metadata, params or data that do not follow the protocol (the message names the field)."""


class SignatureError(MizanCacheError):
    """A purge signature that is missing, forged, replayed or outside the time window."""


class NoSecret(MizanCacheError, RuntimeError):
    """A call that derives keys, on a ``Cache`` opened without a secret."""
