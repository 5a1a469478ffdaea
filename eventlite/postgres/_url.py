"""Database URLs shown without their secrets, and scrubbed error text."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

__all__ = ["is_postgres_url", "mask_url", "scrub", "split_schema"]

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


def split_schema(url: str) -> tuple[str, str | None]:
    """``url`` without its ``schema`` query parameter (eventlite's, not libpq's), and
    that parameter's value (None when absent).

    >>> split_schema("postgresql://app@db/shop?schema=orders&sslmode=require")
    ('postgresql://app@db/shop?sslmode=require', 'orders')
    """
    if not is_postgres_url(url):
        return url, None
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in pairs if k == "schema"]
    if not schemas:
        return url, None
    query = urlencode([(k, v) for k, v in pairs if k != "schema"], quote_via=quote)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment)), schemas[-1]
