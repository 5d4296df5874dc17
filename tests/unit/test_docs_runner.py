"""The docs runner's Markdown extraction (tests/docs/runner.py): pure, no processes."""

from __future__ import annotations

import pytest

from tests.docs.runner import (
    DocsError,
    extract_blocks,
    file_markers,
    parse_info,
    runnable_blocks,
)


def test_info_strings_language_flags_and_attributes() -> None:
    assert parse_info("sh runnable needs=ca timeout=30") == (
        "sh",
        frozenset({"runnable"}),
        {"needs": "ca", "timeout": "30"},
    )
    assert parse_info("") == ("", frozenset(), {})
    assert parse_info("Python") == ("python", frozenset(), {})


def test_only_marked_shell_and_python_blocks_are_runnable() -> None:
    text = (
        "```sh runnable\necho one\n```\n"
        "```sh\necho plain\n```\n"
        "```python runnable\nprint(2)\n```\n"
        "```json runnable\n{}\n```\n"
        "```\nno info\n```\n"
        "```bash runnable\necho three\n```\n"
        "```sh runnablex\necho not\n```\n"
    )
    blocks = extract_blocks(text, "x.md")
    assert [b.language for b in blocks] == ["sh", "sh", "python", "json", "", "bash", "sh"]
    run = runnable_blocks(text, "x.md")
    assert [b.text for b in run] == ["echo one\n", "print(2)\n", "echo three\n"]
    assert [b.where for b in run] == ["x.md:1", "x.md:7", "x.md:16"]


def test_lines_and_text_are_exact() -> None:
    text = "# t\n\npara\n\n```sh runnable\na\n\n  b\n```\nafter\n"
    (block,) = extract_blocks(text, "d.md")
    assert block.line == 5
    assert block.text == "a\n\n  b\n"
    assert block.info == "sh runnable"


def test_tilde_fences_and_longer_fences_nest_shorter_ones() -> None:
    text = (
        "~~~sh runnable\necho ```\n```\n~~~\n"
        "````markdown\n```sh runnable\nnot a block of its own\n```\n````\n"
    )
    blocks = extract_blocks(text)
    assert [(b.language, b.line) for b in blocks] == [("sh", 1), ("markdown", 5)]
    assert blocks[0].text == "echo ```\n```\n"
    assert "not a block of its own" in blocks[1].text
    assert [b.line for b in runnable_blocks(text)] == [1]


def test_a_closing_fence_must_match_character_and_length() -> None:
    text = "````sh runnable\n```\n~~~~\n````\n"
    (block,) = extract_blocks(text)
    assert block.text == "```\n~~~~\n"


def test_a_line_with_an_info_string_does_not_close_a_fence() -> None:
    text = "```sh runnable\n```python\n```\n"
    (block,) = extract_blocks(text)
    assert block.text == "```python\n"


def test_a_runnable_block_inside_a_list_item_loses_its_indentation() -> None:
    text = (
        "1. Start it:\n\n"
        "   ```sh runnable\n"
        "   echo in a list\n"
        "     indented more\n"
        "   ```\n"
        "2. next\n"
    )
    (block,) = runnable_blocks(text, "l.md")
    assert block.line == 3
    assert block.text == "echo in a list\n  indented more\n"


def test_an_unterminated_fence_is_an_error_naming_its_line() -> None:
    with pytest.raises(DocsError, match=r"u\.md:3: the fence '```' is never closed"):
        extract_blocks("text\n\n```sh runnable\necho forever\n", "u.md")
    with pytest.raises(DocsError, match="never closed"):
        extract_blocks("~~~\n```\n")


def test_a_backtick_in_a_backtick_info_string_is_refused() -> None:
    with pytest.raises(DocsError, match=r"x\.md:1"):
        extract_blocks("```sh `x`\n```\n", "x.md")


def test_file_markers_outside_code_only_and_unknown_ones_refused() -> None:
    assert file_markers("<!-- runnable: serve -->\n") == {"serve"}
    assert file_markers("no marker\n") == frozenset()
    quoted = "```markdown\n<!-- runnable: serve -->\n```\n"
    assert file_markers(quoted) == frozenset()
    with pytest.raises(DocsError, match="unknown runnable marker 'sevre'"):
        file_markers("x\n<!-- runnable: sevre -->\n", "m.md")
