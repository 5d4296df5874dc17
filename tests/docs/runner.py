"""Extract fenced code blocks from Markdown, and say which ones the docs test runs.

Pure: text in, blocks out (no I/O but :func:`read_doc`). The conventions are described in
docs/writing-docs.md:

- a block is runnable when its info string is ``sh runnable``, ``bash runnable`` or
  ``python runnable`` (further words are attributes, ``key=value`` or bare flags);
- a file whose blocks need the CA's servers says so once with ``<!-- runnable: serve -->``
  (any line); without it the harness gives the file an initialised CA and no servers.

Fences follow CommonMark closely enough for our docs: three or more backticks or tildes,
indented (inside list items) by any amount; the closing fence uses the same character, is at
least as long, and carries nothing else. Content lines lose up to the opening fence's
indentation. An unterminated fence is an error, not a block that runs to the end of the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

RUNNABLE_LANGUAGES = ("sh", "bash", "python")
#: file-level markers: ``<!-- runnable: serve -->``
_MARKER = re.compile(r"^\s*<!--\s*runnable:\s*([a-z][a-z0-9 ,_-]*?)\s*-->\s*$")
_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
KNOWN_MARKERS = ("serve",)


class DocsError(ValueError):
    """A Markdown file the docs test cannot read unambiguously."""


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its info string, and its text."""

    path: str
    line: int  # 1-based line of the opening fence
    info: str
    text: str
    language: str = ""
    flags: frozenset[str] = frozenset()
    attrs: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def runnable(self) -> bool:
        """Whether the docs test runs this block."""
        return self.language in RUNNABLE_LANGUAGES and "runnable" in self.flags

    @property
    def where(self) -> str:
        """``file:line`` of the opening fence."""
        return f"{self.path}:{self.line}"


def parse_info(info: str) -> tuple[str, frozenset[str], dict[str, str]]:
    """Split an info string into its language, bare flags and ``key=value`` attributes."""
    words = info.split()
    if not words:
        return "", frozenset(), {}
    flags: set[str] = set()
    attrs: dict[str, str] = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if sep:
            attrs[key] = value
        else:
            flags.add(word)
    return words[0].lower(), frozenset(flags), attrs


def _strip_indent(line: str, indent: int) -> str:
    """``line`` without up to ``indent`` leading spaces (CommonMark, for fenced content)."""
    n = 0
    while n < indent and n < len(line) and line[n] == " ":
        n += 1
    return line[n:]


def extract_blocks(text: str, path: str = "<string>") -> list[Block]:
    """Every fenced code block of ``text``, in order.

    Raises :class:`DocsError` for an unterminated fence, and for a backtick fence whose info
    string contains a backtick (CommonMark does not treat that line as a fence; we refuse it
    rather than guess).
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        indent = len(m["indent"].expandtabs(4))
        fence, info = m["fence"], m["info"].strip()
        if fence[0] == "`" and "`" in info:
            raise DocsError(f"{path}:{i + 1}: a backtick fence's info string has a backtick")
        closing = re.compile(r"^[ \t]*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}\s*$")
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not closing.match(lines[i]):
            body.append(_strip_indent(lines[i], indent))
            i += 1
        if i == len(lines):
            raise DocsError(f"{path}:{start + 1}: the fence {fence!r} is never closed")
        language, flags, attrs = parse_info(info)
        blocks.append(
            Block(
                path=path,
                line=start + 1,
                info=info,
                text="\n".join(body) + ("\n" if body else ""),
                language=language,
                flags=flags,
                attrs=attrs,
            )
        )
        i += 1
    return blocks


def runnable_blocks(text: str, path: str = "<string>") -> list[Block]:
    """The blocks of ``text`` the docs test runs, in order."""
    return [b for b in extract_blocks(text, path) if b.runnable]


def file_markers(text: str, path: str = "<string>") -> frozenset[str]:
    """The ``<!-- runnable: ... -->`` markers of a file, outside code blocks.

    An unknown marker is an error, so a typo cannot silently run a file without its servers.
    """
    inside: set[int] = set()
    for block in extract_blocks(text, path):
        n = block.text.count("\n")
        inside.update(range(block.line, block.line + n + 2))
    found: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        m = _MARKER.match(line)
        if not m or number in inside:
            continue
        for word in re.split(r"[\s,]+", m[1]):
            if word not in KNOWN_MARKERS:
                raise DocsError(
                    f"{path}:{number}: unknown runnable marker {word!r} "
                    f"(known: {', '.join(KNOWN_MARKERS)})"
                )
            found.add(word)
    return frozenset(found)


@dataclass(frozen=True)
class Doc:
    """A Markdown file as the docs test sees it."""

    path: str
    blocks: tuple[Block, ...]
    markers: frozenset[str]


def read_doc(file: Path, root: Path) -> Doc:
    """Read ``file`` and name it relative to ``root`` (the checkout) in messages."""
    text = file.read_text(encoding="utf-8")
    name = str(file.relative_to(root))
    return Doc(name, tuple(runnable_blocks(text, name)), file_markers(text, name))
