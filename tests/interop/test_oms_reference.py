"""wire.oms against ``model-signing`` (OpenSSF Model Signing 1.1.x) itself, decision 0049.

The reference is the package's own hashing (``model_signing.hashing.Config().hash``) and its
own in-toto payload builder: the statement it would sign, whose subject digest is what
agentca certifies. Same directory, same options, same root digest, same resources, same
refusals (where OMS refuses).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.oms_reference import oms_root, oms_statement
from wire import oms
from wire.digests import DigestError


def make(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def same(path: Path, **kwargs: object) -> oms.ModelDigest:
    """wire.oms's digest of ``path``, asserted equal to model-signing's (root and items)."""
    ours = oms.model_digest(path, **kwargs)  # type: ignore[arg-type]
    theirs = oms_statement(path, **kwargs)  # type: ignore[arg-type]
    assert ours.root.hex() == theirs["subject"][0]["digest"]["sha256"]
    assert [(r.name, r.sha256.hex()) for r in ours.resources] == [
        (r["name"], r["digest"]) for r in theirs["predicate"]["resources"]
    ]
    assert oms.statement_digest(theirs)[0] == ours.root
    return ours


SHAPES: dict[str, dict[str, bytes]] = {
    "nested": {
        "config.json": b'{"layers":2}',
        "weights/shard-00001.bin": bytes(range(256)) * 40,
        "weights/shard-00002.bin": b"def",
        "tokenizer/merges/part/a.txt": b"x",
    },
    "empty files": {"a": b"", "b/c": b"", "d": b"data"},
    "unicode": {
        "\u00fcn\u00efc\u00f6d\u00e9.bin": b"1",
        "\u6a21\u578b/\u6743\u91cd.safetensors": b"2",
        "\U0001f916.json": b"3",
        "e\u0301.txt": b"4",  # NFD: names are not normalised
        "\u00e9.txt": b"5",  # NFC
    },
    "order traps": {"a/b": b"1", "a-b": b"2", "a.txt": b"3", "a b": b"4", "A": b"5", "a0": b"6"},
    "ignored": {
        ".git/HEAD": b"ref",
        ".git/objects/ab/cdef": b"obj",
        ".gitattributes": b"*.bin filter=lfs",
        ".gitignore": b"*.tmp",
        ".github/workflows/ci.yml": b"on: push",
        "sub/.gitignore": b"nested: hashed",
        "sub/.git/HEAD": b"nested: hashed",
        ".hidden": b"hidden: hashed",
        "w.bin": b"w",
    },
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_directory_shapes(tmp_path: Path, shape: str) -> None:
    same(make(tmp_path / "model", SHAPES[shape]))


def test_single_file_model(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"weights" * 1000)
    ours = same(path)
    assert [r.name for r in ours.resources] == ["."]


def test_ignored_signature_file(tmp_path: Path) -> None:
    """As ``model_signing sign --signature model/model.sig``: the signature is left out."""
    model = make(tmp_path / "model", {"w.bin": b"w", "model.sig": b"{}", "docs/readme": b"r"})
    same(model, ignore=["model.sig", "docs"])


def test_larger_than_a_chunk(tmp_path: Path) -> None:
    model = make(tmp_path / "model", {"big.bin": os.urandom(3 * (1 << 20) + 17), "s": b"s"})
    same(model)


def test_symlinks_allowed_inside_and_outside(tmp_path: Path) -> None:
    model = make(tmp_path / "model", {"w.bin": b"w", "sub/x.bin": b"x"})
    (tmp_path / "outside.bin").write_bytes(b"outside")
    (model / "inside-link.bin").symlink_to("w.bin")
    (model / "sub" / "outside-link.bin").symlink_to(tmp_path / "outside.bin")
    ours = same(model, allow_symlinks=True)
    assert {"inside-link.bin", "sub/outside-link.bin"} <= {r.name for r in ours.resources}


def test_symlinks_refused_by_default_by_both(tmp_path: Path) -> None:
    model = make(tmp_path / "model", {"w.bin": b"w"})
    (model / "link.bin").symlink_to("w.bin")
    with pytest.raises(ValueError, match="symlink"):
        oms_root(model)
    with pytest.raises(DigestError, match="symlink"):
        oms.model_digest(model)


def test_symlinked_directory_omitted_by_oms_refused_here(tmp_path: Path) -> None:
    """Where the two differ, on purpose: OMS would certify a digest that leaves out what a
    symlinked directory holds; wire.oms refuses."""
    model = make(tmp_path / "model", {"w.bin": b"w"})
    make(tmp_path / "elsewhere", {"hidden.bin": b"not covered by the OMS digest"})
    (model / "more").symlink_to(tmp_path / "elsewhere")
    theirs = oms_statement(model, allow_symlinks=True)
    assert [r["name"] for r in theirs["predicate"]["resources"]] == ["w.bin"]
    with pytest.raises(DigestError, match="symlink to a directory"):
        oms.model_digest(model, allow_symlinks=True)


NAME = st.text(alphabet="ab-. _\u00e9\u6a21", min_size=1, max_size=3)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.tuples(st.lists(NAME, min_size=1, max_size=3), st.binary(max_size=64)),
        min_size=1,
        max_size=8,
    )
)
def test_random_trees(tmp_path_factory: pytest.TempPathFactory, entries: list) -> None:  # type: ignore[type-arg]
    root = tmp_path_factory.mktemp("tree")
    made = 0
    for parts, data in entries:
        if any(p in (".", "..") for p in parts):
            continue
        path = root.joinpath(*parts)
        if any(p.is_file() for p in [*path.parents][: len(parts) - 1]) or path.is_dir():
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            continue
        path.write_bytes(data)
        made += 1
    if made == 0 or not any(p.is_file() for p in root.rglob("*")):
        return
    ignored_only = all(
        p.relative_to(root).parts[0] in oms.GIT_PATHS for p in root.rglob("*") if p.is_file()
    )
    if ignored_only:
        return
    same(root)
