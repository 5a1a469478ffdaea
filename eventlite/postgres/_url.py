"""Database URLs shown without their secrets, and scrubbed error text."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

__all__ = ["is_postgres_url", "mask_url", "scrub"]

_SCHEMES = ("postgresql://", "postgres://")
_SECRET_KEYS = {"password", "sslpassword", "passfile", "sslkey"}
_KEYWORD_SECRET = re.compile(r"\b(password|sslpassword)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.I)


def is_postgres_url(target: object) -> bool:
    """Whether ``target`` is a ``postgresql://`` (or ``postgres://``) URL."""
    return isinstance(target, str) and target.lower().startswith(_SCHEMES)


def mask_url(url: str) -> str:
    """``url`` with its password (and any secret query parameter) replaced by ``***``.

    >>> mask_url("postgresql://shop:s3cret@db.internal:5432/shop?sslmode=require")
    'postgresql://shop:***@db.internal:5432/shop?sslmode=require'
    """
    if not is_postgres_url(url):
        return _KEYWORD_SECRET.sub(lambda m: f"{m.group(1)}=***", url)
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hosts = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hosts}"
    query = parts.query
    if query:
        pairs = [
            (k, "***" if k.lower() in _SECRET_KEYS else v)
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs, safe="*/", quote_via=quote)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every one of ``secrets`` (non-empty ones) replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _KEYWORD_SECRET.sub(lambda m: f"{m.group(1)}=***", text)
