"""Strict plain-data codec for values crossing the sandbox boundary (host side).

Only exact ``None/bool/int/float/complex/str/bytes/list/tuple/set/frozenset/dict/range`` values
are accepted (checked with ``type(x) is ...``) and every decoded value is built fresh here, so an
untrusted program can never hand the scorer an object with its own ``__eq__``. Non-plain results
stay inside the sandbox and arrive as an opaque :class:`RemoteRef`.
Wire format: JSON where objects are one-key tags (``{"t": [...]}`` tuple, ``{"s": ...}`` set,
``{"f": ...}`` frozenset, ``{"d": [[k, v], ...]}`` dict, ``{"I": "0x.."}`` big int,
``{"b": base64}`` bytes, ``{"c": [re, im]}`` complex, ``{"r": [start, stop, step]}`` range,
``{"it": [...]}`` iterator, ``{"h": id}`` handle to an object that stays in the sandbox).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

MAX_DEPTH = 100


class PlainDataError(ValueError):
    """The value cannot be (or was not) strictly encoded as plain data."""


class RemoteRef:
    """An object that lives in the sandbox. It compares equal only to itself."""

    __slots__ = ("id", "type_name")

    def __init__(self, id_: int, type_name: str) -> None:
        self.id = id_
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<sandboxed {self.type_name} object #{self.id}>"

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


def encode(x: Any, depth: int = 0) -> Any:
    """Plain value -> JSON-able structure (raises :class:`PlainDataError` otherwise)."""
    if depth > MAX_DEPTH:
        raise PlainDataError("value nested too deeply")
    t = type(x)
    if x is None or t is bool or t is str:
        return x
    if t is float:
        return x
    if t is int:
        return x if -(2 ** 53) < x < 2 ** 53 else {"I": hex(x)}
    d = depth + 1
    if t is list:
        return [encode(i, d) for i in x]
    if t is tuple:
        return {"t": [encode(i, d) for i in x]}
    if t is set:
        return {"s": [encode(i, d) for i in x]}
    if t is frozenset:
        return {"f": [encode(i, d) for i in x]}
    if t is dict:
        return {"d": [[encode(k, d), encode(v, d)] for k, v in x.items()]}
    if t is complex:
        return {"c": [x.real, x.imag]}
    if t is bytes:
        return {"b": base64.b64encode(x).decode("ascii")}
    if t is range:
        return {"r": [x.start, x.stop, x.step]}
    if t is RemoteRef:
        return {"h": x.id}
    raise PlainDataError(f"cannot send a {t.__name__} into the sandbox")


def _ints(v: Any, n: int) -> list[int]:
    if type(v) is not list or len(v) != n or any(type(i) is not int for i in v):
        raise PlainDataError("malformed range")
    return v


def decode(x: Any, depth: int = 0) -> Any:
    """JSON structure from the sandbox -> fresh plain value (strict; raises PlainDataError)."""
    if depth > MAX_DEPTH:
        raise PlainDataError("value nested too deeply")
    t = type(x)
    if x is None or t is bool or t is str or t is int or t is float:
        return x
    d = depth + 1
    if t is list:
        return [decode(i, d) for i in x]
    if t is not dict or len(x) not in (1, 2):
        raise PlainDataError(f"unexpected {t.__name__} in plain data")
    tag = next(iter(x))
    v = x[tag]
    if len(x) == 2 and not (tag == "h" and set(x) == {"h", "type"}):
        raise PlainDataError("malformed tag")
    try:
        if tag == "I" and type(v) is str:
            return int(v, 16)
        if tag == "t" and type(v) is list:
            return tuple(decode(i, d) for i in v)
        if tag == "s" and type(v) is list:
            return {decode(i, d) for i in v}
        if tag == "f" and type(v) is list:
            return frozenset(decode(i, d) for i in v)
        if tag == "d" and type(v) is list:
            out = {}
            for pair in v:
                if type(pair) is not list or len(pair) != 2:
                    raise PlainDataError("malformed dict item")
                out[decode(pair[0], d)] = decode(pair[1], d)
            return out
        if tag == "c" and type(v) is list and len(v) == 2 \
                and all(type(i) in (int, float) for i in v):
            return complex(v[0], v[1])
        if tag == "b" and type(v) is str:
            return base64.b64decode(v.encode("ascii"), validate=True)
        if tag == "r":
            return range(*_ints(v, 3))
        if tag == "it" and type(v) is list:
            return iter([decode(i, d) for i in v])
        if tag == "h" and type(v) is int:
            name = x.get("type", "object")
            return RemoteRef(v, name if type(name) is str else "object")
    except (TypeError, ValueError, binascii.Error, OverflowError) as e:
        if isinstance(e, PlainDataError):
            raise
        raise PlainDataError(f"bad {tag!r} value: {e}") from None
    raise PlainDataError(f"unknown tag {tag!r}")


def loads(line: bytes) -> Any:
    """Parse one protocol line (JSON) without trusting it."""
    try:
        return json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PlainDataError(f"unparseable message: {type(e).__name__}: {str(e)[:200]}") from None


def dumps(obj: Any) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), allow_nan=True) + "\n").encode("utf-8")
