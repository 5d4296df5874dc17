"""A strict RFC 8941 structured-field parser (dictionaries, lists, inner lists, items) and the
serialiser of inner lists needed to rebuild ``@signature-params``. Decimals are refused."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Final

_KEY_RE: Final = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN_RE: Final = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_INT_RE: Final = re.compile(r"-?[0-9]{1,15}")
_B64_RE: Final = re.compile(r"[A-Za-z0-9+/=]*")
_STRING_RE: Final = re.compile(r'"((?:[ !#-\[\]-~]|\\["\\])*)"')
_UNESCAPE_RE: Final = re.compile(r'\\(["\\])')


class SFError(ValueError):
    """Not a valid structured field value."""


@dataclass(frozen=True)
class Token:
    value: str


Bare = int | str | bytes | bool | Token
Params = tuple[tuple[str, Bare], ...]


@dataclass(frozen=True)
class Item:
    value: Bare
    params: Params = ()


@dataclass(frozen=True)
class InnerList:
    items: tuple[Item, ...]
    params: Params = ()


Member = Item | InnerList


class _Parser:
    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        if not text.isascii():
            raise SFError("non-ASCII structured field")
        self.text = text.strip(" ")
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise SFError(f"expected {char!r} at {self.pos}")
        self.pos += 1

    def skip_sp(self) -> None:
        while self.peek() == " ":
            self.pos += 1

    def skip_ows(self) -> None:
        while self.peek() in (" ", "\t"):
            self.pos += 1

    def key(self) -> str:
        m = _KEY_RE.match(self.text, self.pos)
        if not m:
            raise SFError(f"expected a key at {self.pos}")
        self.pos = m.end()
        return m.group()

    def bare(self) -> Bare:
        c = self.peek()
        if c == '"':
            return self.string()
        if c == ":":
            return self.byte_seq()
        if c == "?":
            self.pos += 1
            b = self.peek()
            if b not in ("0", "1"):
                raise SFError("bad boolean")
            self.pos += 1
            return b == "1"
        if c == "-" or c.isdigit():
            m = _INT_RE.match(self.text, self.pos)
            if not m:
                raise SFError("bad integer")
            self.pos = m.end()
            if self.peek() == ".":
                raise SFError("decimals are not accepted")
            return int(m.group())
        m = _TOKEN_RE.match(self.text, self.pos)
        if not m:
            raise SFError(f"unexpected character at {self.pos}")
        self.pos = m.end()
        return Token(m.group())

    def string(self) -> str:
        m = _STRING_RE.match(self.text, self.pos)
        if not m:
            raise SFError(f"bad string at {self.pos}")
        self.pos = m.end()
        raw = m.group(1)
        return _UNESCAPE_RE.sub(r"\1", raw) if "\\" in raw else raw

    def byte_seq(self) -> bytes:
        self.expect(":")
        end = self.text.find(":", self.pos)
        if end < 0:
            raise SFError("unterminated byte sequence")
        raw = self.text[self.pos : end]
        self.pos = end + 1
        if not _B64_RE.fullmatch(raw):
            raise SFError("bad base64 in byte sequence")
        try:
            return base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise SFError("bad base64 in byte sequence") from None

    def params(self) -> Params:
        out: list[tuple[str, Bare]] = []
        seen: dict[str, int] = {}
        while self.peek() == ";":
            self.pos += 1
            self.skip_sp()
            k = self.key()
            v: Bare = True
            if self.peek() == "=":
                self.pos += 1
                v = self.bare()
            if k in seen:  # last one wins, in the first one's place (RFC 8941 4.2.3.2)
                out[seen[k]] = (k, v)
            else:
                seen[k] = len(out)
                out.append((k, v))
        return tuple(out)

    def item(self) -> Item:
        return Item(self.bare(), self.params())

    def member(self) -> Member:
        if self.peek() == "(":
            self.pos += 1
            items: list[Item] = []
            while True:
                self.skip_sp()
                if self.peek() == ")":
                    self.pos += 1
                    return InnerList(tuple(items), self.params())
                items.append(self.item())
                if self.peek() not in (" ", ")"):
                    raise SFError("bad inner list")
        return self.item()

    def done(self) -> bool:
        return self.pos >= len(self.text)

    def comma(self) -> bool:
        """After a member: True if another follows."""
        self.skip_ows()
        if self.done():
            return False
        self.expect(",")
        self.skip_ows()
        if self.done():
            raise SFError("trailing comma")
        return True


def parse_dictionary(text: str) -> dict[str, Member]:
    """An sf-dictionary (later duplicates override earlier ones)."""
    p = _Parser(text)
    out: dict[str, Member] = {}
    if p.done():
        return out
    while True:
        k = p.key()
        if p.peek() == "=":
            p.pos += 1
            out[k] = p.member()
        else:
            out[k] = Item(True, p.params())
        if not p.comma():
            return out


def parse_list(text: str) -> list[Member]:
    """An sf-list."""
    p = _Parser(text)
    out: list[Member] = []
    if p.done():
        return out
    while True:
        out.append(p.member())
        if not p.comma():
            return out


def parse_item(text: str) -> Item:
    """An sf-item."""
    p = _Parser(text)
    item = p.item()
    if not p.done():
        raise SFError("trailing characters after item")
    return item


def serialize_bare(value: Bare) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode() + ":"
    return value.value


def serialize_params(params: Params) -> str:
    return "".join(f";{k}" if v is True else f";{k}={serialize_bare(v)}" for k, v in params)


def serialize_inner_list(inner: InnerList) -> str:
    body = " ".join(serialize_bare(i.value) + serialize_params(i.params) for i in inner.items)
    return f"({body}){serialize_params(inner.params)}"
