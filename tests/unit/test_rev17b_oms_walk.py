"""Review 17b: the OMS digest (``wire.oms``) on what is not a regular file.

A path that turned into a directory (or a symlink to one) between the walk and the open, and
every other non-file, must be a :class:`DigestError` naming the file, never a raw
``IsADirectoryError`` from ``os.fdopen`` ("Is a directory: 3").
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wire.digests import DigestError
from wire.oms import hash_file, model_digest, model_files


def test_hash_file_on_a_directory_is_a_digest_error(tmp_path: Path) -> None:
    with pytest.raises(DigestError, match=r"'weights\.bin' is not a regular file"):
        hash_file("weights.bin", str(tmp_path))


def test_a_file_swapped_for_a_directory_after_the_walk_is_a_digest_error(
    tmp_path: Path,
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "a.bin").write_bytes(b"a")
    (model / "b.bin").write_bytes(b"b")
    listed = model_files(model)  # what model_digest walks first
    (model / "b.bin").unlink()
    (model / "b.bin").mkdir()  # swapped before it is opened
    with pytest.raises(DigestError, match=r"'b\.bin' is not a regular file"):
        for name, fs_path in listed:
            hash_file(name, fs_path)


def test_a_symlink_swapped_to_a_directory_is_a_digest_error(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "a.bin").write_bytes(b"a")
    os.symlink(tmp_path, model / "link")
    with pytest.raises(DigestError, match="is not a regular file"):
        hash_file("link", str(model / "link"), follow=True)
    with pytest.raises(DigestError, match="symlink to a directory"):
        model_digest(model, allow_symlinks=True)
