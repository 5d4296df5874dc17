"""The OMS-compatible model digest (wire/oms.py, decision 0049), pure parts.

The expected values here are computed from the OMS rules as written in the OMS sources
(SHA-256 over the per-file SHA-256 values in ``PurePosixPath`` order), not with wire.oms;
tests/interop/test_oms_reference.py holds wire.oms to ``model-signing`` itself.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from wire import oms
from wire.digests import DigestError

ROOT = Path(__file__).resolve().parents[2]


def expected_root(files: dict[str, bytes]) -> bytes:
    """The OMS root digest of ``files`` (name -> content), by the rules, independently."""
    names = sorted(files, key=PurePosixPath)
    return hashlib.sha256(b"".join(hashlib.sha256(files[n]).digest() for n in names)).digest()


def make(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


FILES = {
    "config.json": b'{"architecture":"llama","layers":2}\n',
    "weights/shard-00001.bin": b"abc",
    "weights/shard-00002.bin": b"def",
    "a.txt": b"1",
    "a/b": b"2",
    "a-b": b"3",
    "empty": b"",
    ".hidden": b"4",
    "sub/.gitignore": b"nested git files are hashed",
    "\u00fcn\u00efc\u00f6d\u00e9 \u00e9/\u6a21\u578b.bin": b"5",
}


def test_root_digest_and_order(tmp_path: Path) -> None:
    model = make(tmp_path / "m", FILES)
    result = oms.model_digest(model)
    assert result.root == expected_root(FILES)
    names = [r.name for r in result.resources]
    assert names == sorted(FILES, key=PurePosixPath)
    # component order, not string order: "a/b" < "a-b" < "a.txt" ('-' and '.' sort below '/')
    assert names.index("a/b") < names.index("a-b") < names.index("a.txt")
    assert sorted(FILES) != names  # the joined-string order would differ
    assert [r.size for r in result.resources] == [len(FILES[n]) for n in names]
    assert [s.name for s in result.stamps] == names


def test_git_paths_at_the_top_are_ignored(tmp_path: Path) -> None:
    ignored = {
        ".git/HEAD": b"ref",
        ".git/objects/ab/cd": b"obj",
        ".gitattributes": b"*.bin lfs",
        ".gitignore": b"*.tmp",
        ".github/workflows/ci.yml": b"on: push",
    }
    model = make(tmp_path / "m", FILES | ignored)
    assert oms.model_digest(model).root == expected_root(FILES)


def test_extra_ignored_paths(tmp_path: Path) -> None:
    model = make(tmp_path / "m", FILES | {"model.sig": b"{}", "docs/a.md": b"x", "docs/b": b"y"})
    got = oms.model_digest(model, ignore=["model.sig", "./docs/"])
    assert got.root == expected_root(FILES)
    # an ignored name only matches whole components: "docs" does not ignore "docs2"
    make(model, {"docs2": b"z"})
    assert oms.model_digest(model, ignore=["model.sig", "docs"]).root == expected_root(
        FILES | {"docs2": b"z"}
    )


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../b", "", ".", "a\\b"])
def test_ignored_paths_cannot_escape(tmp_path: Path, bad: str) -> None:
    model = make(tmp_path / "m", FILES)
    with pytest.raises(DigestError, match="ignored path"):
        oms.model_digest(model, ignore=[bad])


def test_single_file(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"weights")
    result = oms.model_digest(path)
    assert [r.name for r in result.resources] == ["."]
    assert result.root == hashlib.sha256(hashlib.sha256(b"weights").digest()).digest()
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert oms.model_digest(empty).root == hashlib.sha256(hashlib.sha256(b"").digest()).digest()


def test_renaming_in_order_keeps_the_root_and_content_changes_it(tmp_path: Path) -> None:
    """What the OMS root binds (documented in decision 0049): content and order, not names."""
    model = make(tmp_path / "m", {"a.json": b"1", "b.bin": b"2"})
    before = oms.model_digest(model).root
    (model / "a.json").rename(model / "a.json.off")
    assert oms.model_digest(model).root == before
    (model / "b.bin").write_bytes(b"3")
    assert oms.model_digest(model).root != before


def test_symlinks(tmp_path: Path) -> None:
    model = make(tmp_path / "m", {"w.bin": b"w"})
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"o")
    (model / "in.bin").symlink_to("w.bin")
    with pytest.raises(DigestError, match="symlink"):
        oms.model_digest(model)
    # OMS's allow_symlinks: a symlinked file is hashed through, wherever it points
    (model / "out.bin").symlink_to(outside)
    got = oms.model_digest(model, allow_symlinks=True)
    assert got.root == expected_root({"w.bin": b"w", "in.bin": b"w", "out.bin": b"o"})
    # a symlinked directory: OMS would skip it silently; refused here
    (tmp_path / "d").mkdir()
    (model / "d").symlink_to(tmp_path / "d")
    with pytest.raises(DigestError, match="symlink to a directory"):
        oms.model_digest(model, allow_symlinks=True)


def test_symlink_in_an_ignored_tree_is_refused_as_oms_does(tmp_path: Path) -> None:
    model = make(tmp_path / "m", {"w.bin": b"w", ".git/HEAD": b"x"})
    (model / ".git" / "link").symlink_to("HEAD")
    with pytest.raises(DigestError, match="symlink"):
        oms.model_digest(model)


def test_model_path_symlink(tmp_path: Path) -> None:
    model = make(tmp_path / "m", {"w.bin": b"w"})
    (tmp_path / "link").symlink_to(model)
    with pytest.raises(DigestError, match="symlink"):
        oms.model_digest(tmp_path / "link")
    assert oms.model_digest(tmp_path / "link", allow_symlinks=True).root == expected_root(
        {"w.bin": b"w"}
    )


def test_refusals(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DigestError, match="no file to hash"):
        oms.model_digest(empty)
    only_git = make(tmp_path / "g", {".git/HEAD": b"x"})
    with pytest.raises(DigestError, match="no file to hash"):
        oms.model_digest(only_git)
    fifo = make(tmp_path / "f", {"w.bin": b"w"})
    os.mkfifo(fifo / "pipe")
    with pytest.raises(DigestError, match="not a regular file"):
        oms.model_digest(fifo)
    with pytest.raises(DigestError, match="cannot read model path"):
        oms.model_digest(tmp_path / "missing")


def test_non_utf8_name_is_refused(tmp_path: Path) -> None:
    model = make(tmp_path / "m", {"w.bin": b"w"})
    with open(os.fsencode(model) + b"/bad\xff", "wb") as f:
        f.write(b"x")
    with pytest.raises(DigestError, match="not valid UTF-8"):
        oms.model_digest(model)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable directories")
def test_unreadable_directory_is_refused_not_skipped(tmp_path: Path) -> None:
    """OMS's glob silently skips a directory it cannot list; that would hide weights."""
    model = make(tmp_path / "m", {"w.bin": b"w", "locked/x.bin": b"x"})
    (model / "locked").chmod(0)
    try:
        with pytest.raises(DigestError, match="cannot list"):
            oms.model_digest(model)
    finally:
        (model / "locked").chmod(0o755)


def test_hash_file_refuses_a_symlink_swapped_in(tmp_path: Path) -> None:
    """The walk saw a file; if a symlink replaces it before the open, O_NOFOLLOW refuses."""
    (tmp_path / "target").write_bytes(b"evil")
    (tmp_path / "w.bin").symlink_to(tmp_path / "target")
    with pytest.raises(DigestError, match="cannot read model file"):
        oms.hash_file("w.bin", str(tmp_path / "w.bin"))


def test_fingerprint_sees_a_same_size_same_mtime_swap(tmp_path: Path) -> None:
    model = make(tmp_path / "m", {"w.bin": b"aaaa"})
    before = oms.model_digest(model).stamps
    assert oms.model_fingerprint(model) == before
    st = os.stat(model / "w.bin")
    (tmp_path / "new").write_bytes(b"bbbb")
    os.utime(tmp_path / "new", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp_path / "new", model / "w.bin")
    after = oms.model_fingerprint(model)
    assert (after[0].size, after[0].mtime_ns) == (before[0].size, before[0].mtime_ns)
    assert after != before  # inode / ctime differ


def test_constant_memory_on_a_large_sparse_file(tmp_path: Path) -> None:
    """512 MiB (sparse) hashed in a fresh interpreter: peak RSS grows by less than 16 MiB."""
    size = 1 << 29
    with open(tmp_path / "big.bin", "wb") as f:
        f.truncate(size)
    code = (
        "import resource, sys; from wire import oms\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "d = oms.model_digest(sys.argv[1])\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(d.root.hex(), d.resources[0].size, after - before)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    ).stdout.split()
    h = hashlib.sha256()
    zeros = bytes(1 << 20)
    for _ in range(size >> 20):
        h.update(zeros)
    assert out[0] == hashlib.sha256(h.digest()).hexdigest()
    assert int(out[1]) == size
    assert int(out[2]) < 16 * 1024, f"peak RSS grew by {out[2]} KiB"


def statement(resources: list[tuple[str, str]], root: str | None = None) -> dict[str, object]:
    if root is None:
        root = hashlib.sha256(b"".join(bytes.fromhex(d) for _, d in resources)).hexdigest()
    return {
        "_type": oms.STATEMENT_TYPE,
        "subject": [{"name": "m", "digest": {"sha256": root}}],
        "predicateType": oms.PREDICATE_TYPE,
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False},
            "resources": [{"name": n, "algorithm": "sha256", "digest": d} for n, d in resources],
        },
    }


H1, H2 = hashlib.sha256(b"1").hexdigest(), hashlib.sha256(b"2").hexdigest()


def test_statement_digest(tmp_path: Path) -> None:
    model = make(tmp_path / "m", {"a/b": b"1", "a.txt": b"2"})
    root, resources = oms.statement_digest(statement([("a/b", H1), ("a.txt", H2)]))
    assert root == oms.model_digest(model).root
    assert [r.name for r in resources] == ["a/b", "a.txt"]
    assert oms.statement_digest(statement([(".", H1)]))[0] == oms.root_digest([bytes.fromhex(H1)])


@pytest.mark.parametrize(
    ("resources", "needle"),
    [
        ([("../etc/passwd", H1)], "inside the model directory"),
        ([("a/../../b", H1)], "inside the model directory"),
        ([("/etc/passwd", H1)], "relative"),
        ([("a\\..\\b", H1)], "relative"),
        ([("a//b", H1)], "canonical form"),
        ([("./a", H1)], "canonical form"),
        ([("a/", H1)], "canonical form"),
        ([("a", H1), ("a", H2)], "unique"),
        ([("b", H1), ("a", H2)], "OMS order"),
        ([("a.txt", H1), ("a/b", H2)], "OMS order"),
        ([(".", H1), ("a", H2)], "OMS order"),
        ([("a", H1.upper())], "lowercase hex"),
    ],
)
def test_statement_refusals(resources: list[tuple[str, str]], needle: str) -> None:
    with pytest.raises(DigestError, match=needle):
        oms.statement_digest(statement(resources))


def test_statement_wrong_root_or_type() -> None:
    with pytest.raises(DigestError, match="do not hash to the subject"):
        oms.statement_digest(statement([("a", H1)], root=H2))
    bad = statement([("a", H1)]) | {"predicateType": "https://model_signing/Digests/v0.1"}
    with pytest.raises(DigestError, match="predicate type"):
        oms.statement_digest(bad)
    shards = statement([("a", H1)])
    shards["predicate"] = {"serialization": {"method": "shards", "hash_type": "sha256"}}
    with pytest.raises(DigestError, match="file serialization"):
        oms.statement_digest(shards)


DEPTH = 1100  # deeper than Python's recursion limit


@pytest.fixture
def deep_model(tmp_path: Path) -> Iterator[Path]:
    """``m/d/d/.../d/w.bin``, DEPTH levels; removed bottom-up afterwards (pytest's own
    cleanup, shutil.rmtree, recurses and would fail on it in a later session)."""
    root = str(tmp_path / "m")
    path = root
    os.mkdir(path)
    try:
        for _ in range(DEPTH):
            path += "/d"
            os.mkdir(path)
        with open(path + "/w.bin", "wb") as f:
            f.write(b"w")
        yield Path(root)
    finally:
        if os.path.exists(path + "/w.bin"):
            os.unlink(path + "/w.bin")
        while len(path) >= len(root):
            if os.path.isdir(path):
                os.rmdir(path)
            path = path[:-2]


def test_a_deep_tree_does_not_exhaust_the_stack(deep_model: Path) -> None:
    got = oms.model_digest(deep_model)
    assert got.root == expected_root({"/".join(["d"] * DEPTH + ["w.bin"]): b"w"})


def test_a_rewrite_during_hashing_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is rewritten in place while it is read and its mtime set back: the ctime
    still moves, and the digest (which mixes old and new bytes) is refused."""
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * (3 << 20))
    st = os.stat(path)
    real = hashlib.sha256

    class Rewriting:
        def __init__(self) -> None:
            self.h, self.first = real(), True

        def update(self, data: bytes) -> None:
            if self.first:
                self.first = False
                with open(path, "r+b") as f:
                    f.seek(2 << 20)
                    f.write(b"b")
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
            self.h.update(data)

        def digest(self) -> bytes:
            return self.h.digest()

    monkeypatch.setattr(oms, "hashlib", types.SimpleNamespace(sha256=Rewriting))
    with pytest.raises(DigestError, match="changed while it was being hashed"):
        oms.hash_file("w.bin", str(path))
    monkeypatch.undo()
    assert oms.hash_file("w.bin", str(path))[0].sha256 == real(path.read_bytes()).digest()


def test_the_manifest_scheme_walks_a_deep_tree_too(deep_model: Path) -> None:
    from wire import digests

    entries = list(digests.model_manifest(deep_model))
    assert [e.path for e in entries] == ["/".join(["d"] * DEPTH + ["w.bin"])]
