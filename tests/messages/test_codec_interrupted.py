"""An interrupt (Ctrl-C, a signal handler's exception) landing while ``cattrs`` generates
a message class's hooks on first use leaves a mark that makes every later use of the class
fail with ``RecursionError``. The codec recognises the stale mark and carries on: the
class still encodes and decodes, and no stored event is reported unreadable."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from cattrs.gen._consts import already_generating

from eventlite import Codec, Registry, event

registry = Registry()


@event(registry=registry, name="interrupted.Priced")
class Priced:
    sku: str
    price: Decimal


@pytest.fixture
def stale_mark() -> Iterator[None]:
    """What an interrupt in the middle of the hooks' generation leaves behind."""
    already_generating.working_set = {Priced}
    yield
    if hasattr(already_generating, "working_set"):
        del already_generating.working_set


def test_encoding_after_an_interrupted_hook_generation(stale_mark: None) -> None:
    """The first encode after the interrupt works, and so does the next."""
    codec = Codec(registry)
    message = Priced(sku="a", price=Decimal("1.50"))
    assert '{"sku":"a","price":"1.50"}' == codec.encode(message)
    assert {"sku": "a", "price": "1.50"} == codec.to_dict(message)


@pytest.mark.parametrize("how", ["decode", "decoder", "from_dict"])
def test_decoding_after_an_interrupted_hook_generation(stale_mark: None, how: str) -> None:
    """Every way of reading a stored message works after the interrupt: none of them
    reports the good text as undecodable."""
    codec = Codec(registry)
    text = '{"sku":"a","price":"1.50"}'
    if how == "decode":
        got = codec.decode("interrupted.Priced", text)
    elif how == "decoder":
        got = codec.decoder("interrupted.Priced", 1)(text, 7)
    else:
        got = codec.from_dict("interrupted.Priced", {"sku": "a", "price": "1.50"})
    assert Priced(sku="a", price=Decimal("1.50")) == got


def test_deep_data_is_still_refused_by_name() -> None:
    """A real ``RecursionError`` (data nested too deeply) is not mistaken for the mark."""
    from eventlite import MessageDecodeError

    codec = Codec(registry)
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(MessageDecodeError, match=r"interrupted\.Priced"):
        codec.decode("interrupted.Priced", '{"sku":' + deep + ',"price":"1"}')
