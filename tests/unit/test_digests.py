"""Provenance digests in ca.digests."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc
from pathlib import Path

import pytest

from ca.digests import (
    ManifestEntry,
    canonical_json,
    config_digest,
    manifest_digest,
    model_digest,
    model_manifest,
    prompt_digest,
    prompt_digest_file,
    sha256_stream,
)
from ca.errors import CAError, ErrorCode

ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_prompt_digest_is_sha256_of_exact_bytes(tmp_path: Path) -> None:
    assert prompt_digest(b"abc").hex() == ABC_SHA256
    assert prompt_digest(b"abc\n") != prompt_digest(b"abc")
    assert prompt_digest(b"\xef\xbb\xbfabc") != prompt_digest(b"abc")  # no BOM stripping
    f = tmp_path / "prompt.txt"
    f.write_bytes(b"abc")
    assert prompt_digest_file(f) == prompt_digest(b"abc")
    assert prompt_digest_file(str(f)).hex() == ABC_SHA256


def test_prompt_digest_file_missing(tmp_path: Path) -> None:
    with pytest.raises(CAError) as info:
        prompt_digest_file(tmp_path / "nope")
    assert info.value.code is ErrorCode.INVALID_DIGEST


def test_sha256_stream_small_chunks() -> None:
    data = os.urandom(10_000)
    assert sha256_stream(io.BytesIO(data), chunk_size=7) == (hashlib.sha256(data).digest(), 10_000)


def test_manifest_line_format() -> None:
    entry = ManifestEntry("w/model.bin", 3, bytes.fromhex(ABC_SHA256))
    assert entry.line() == f"{ABC_SHA256}  3  w/model.bin\n".encode()


def test_single_file_known_answer(tmp_path: Path) -> None:
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"abc")
    manifest = f"{ABC_SHA256}  3  model.safetensors\n".encode()
    assert list(model_manifest(f)) == [ManifestEntry("model.safetensors", 3, prompt_digest(b"abc"))]
    assert model_digest(f) == hashlib.sha256(manifest).digest()


def test_single_file_equals_directory_holding_it(tmp_path: Path) -> None:
    d = tmp_path / "model"
    d.mkdir()
    (d / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    assert model_digest(d / "weights.bin") == model_digest(d)


def _make_tree(root: Path, order: list[str]) -> None:
    files = {
        "config.json": b"{}",
        "a.txt": b"A",
        "a/b.bin": b"B" * 5000,
        "a/c/d.bin": b"",
        "Z.bin": b"Z",
        "é.bin": b"accent",
    }
    for name in order:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(files[name])
    (root / "empty-dir").mkdir()


def test_manifest_stable_across_creation_order(tmp_path: Path) -> None:
    names = ["config.json", "a.txt", "a/b.bin", "a/c/d.bin", "Z.bin", "é.bin"]
    _make_tree(tmp_path / "one", names)
    _make_tree(tmp_path / "two", list(reversed(names)))
    assert model_digest(tmp_path / "one") == model_digest(tmp_path / "two")
    paths = [e.path for e in model_manifest(tmp_path / "one")]
    # bytewise UTF-8 order: 'Z' < 'a' and "a.txt" < "a/..." ('.' 0x2e < '/' 0x2f); 'é' last
    assert paths == ["Z.bin", "a.txt", "a/b.bin", "a/c/d.bin", "config.json", "é.bin"]
    manifest = b"".join(e.line() for e in model_manifest(tmp_path / "one"))
    assert model_digest(tmp_path / "one") == hashlib.sha256(manifest).digest()
    assert f"{EMPTY_SHA256}  0  a/c/d.bin\n".encode() in manifest


def test_content_and_name_changes_change_digest(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"x")
    before = model_digest(tmp_path)
    (tmp_path / "w.bin").write_bytes(b"y")
    assert model_digest(tmp_path) != before
    (tmp_path / "w.bin").rename(tmp_path / "v.bin")
    assert model_digest(tmp_path) != before


def test_manifest_digest_of_entries() -> None:
    entries = [ManifestEntry("a", 3, prompt_digest(b"abc"))]
    assert manifest_digest(entries) == hashlib.sha256(entries[0].line()).digest()


def test_symlink_inside_is_followed(tmp_path: Path) -> None:
    (tmp_path / "real.bin").write_bytes(b"abc")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x").write_bytes(b"x")
    (tmp_path / "alias.bin").symlink_to("real.bin")
    (tmp_path / "subalias").symlink_to("sub")
    paths = {e.path: e for e in model_manifest(tmp_path)}
    assert set(paths) == {"alias.bin", "real.bin", "sub/x", "subalias/x"}
    assert paths["alias.bin"].sha256 == paths["real.bin"].sha256


@pytest.mark.parametrize("target", ["../outside.bin", "/etc/hostname", "missing.bin", "."])
def test_bad_symlinks_refused(tmp_path: Path, target: str) -> None:
    (tmp_path / "outside.bin").write_bytes(b"secret")
    model = tmp_path / "model"
    model.mkdir()
    (model / "ok.bin").write_bytes(b"ok")
    (model / "link").symlink_to(target)
    with pytest.raises(CAError) as info:
        list(model_manifest(model))
    assert info.value.code is ErrorCode.INVALID_DIGEST


def test_special_files_and_empty_dirs_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "sub").mkdir()
    with pytest.raises(CAError, match="no files"):
        model_digest(tmp_path / "empty")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(CAError, match="not a regular file"):
        model_digest(tmp_path)
    with pytest.raises(CAError) as info:
        model_digest(tmp_path / "missing")
    assert info.value.code is ErrorCode.INVALID_DIGEST


def test_newline_in_file_name_refused(tmp_path: Path) -> None:
    (tmp_path / "bad\nname").write_bytes(b"x")
    with pytest.raises(CAError, match="line break"):
        model_digest(tmp_path)


def test_constant_memory_on_50_mib(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(50 * 1024 * 1024)  # sparse: no disk used
    tracemalloc.start()
    try:
        digest = model_digest(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024
    entry = f"{hashlib.sha256(bytes(50 * 1024 * 1024)).hexdigest()}  52428800  big.bin\n"
    assert digest == hashlib.sha256(entry.encode()).digest()


def test_config_digest_canonical() -> None:
    a = {
        "temperature": 0.2,
        "tools": ["search", "trade"],
        "name": "ü",
        "n": 1,
        "nested": {"b": 1, "a": None},
    }
    b = {
        "nested": {"a": None, "b": 1},
        "n": 1,
        "name": "ü",
        "tools": ["search", "trade"],
        "temperature": 0.2,
    }
    expected = (
        '{"n":1,"name":"ü","nested":{"a":null,"b":1},"temperature":0.2,"tools":["search","trade"]}'
    )
    assert canonical_json(a) == expected.encode()
    assert config_digest(a) == config_digest(b) == hashlib.sha256(expected.encode()).digest()
    assert config_digest({}).hex() == hashlib.sha256(b"{}").hexdigest()


@pytest.mark.parametrize(
    "obj",
    [
        {"t": float("nan")},
        {"t": float("inf")},
        {"t": [1, float("-inf")]},
        {"t": {"u": float("nan")}},
        {1: "int key"},
        {"t": {2: "x"}},
        {"t": object()},
        {"t": b"bytes"},
        {"t": "\ud800"},
        ["not", "a", "mapping"],
    ],
)
def test_config_digest_rejects(obj: object) -> None:
    with pytest.raises(CAError) as info:
        config_digest(obj)  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.INVALID_DIGEST
