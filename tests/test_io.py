"""Crash-safe writers: complete files only, and round trips that load back."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from calprompt._io import save_tensors_atomic, write_atomic, write_json_atomic


@pytest.mark.parametrize("tensors", [{}, {"ctx": torch.arange(6.0).view(2, 3)}])
def test_tensors_round_trip_including_an_empty_state(tmp_path, tensors):
    """A method without parameters (zero-shot CLIP) saves an empty state that must load back."""
    path = tmp_path / "sub" / "prompt.safetensors"
    save_tensors_atomic(path, tensors)
    loaded = load_file(str(path))
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], v) for k, v in tensors.items())


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"a": 1})

    def broken(temp):
        temp.write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(path, broken)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "x.json", {"loss": float("nan")})


@pytest.mark.parametrize("durable", [True, False])
def test_only_durable_writes_sync_the_file(tmp_path, monkeypatch, durable):
    """Feature-cache entries (checksummed) skip the fsync; everything else is synced before the rename."""
    import os

    synced = []
    monkeypatch.setattr(os, "fsync", synced.append)
    write_atomic(tmp_path / "a.txt", lambda temp: temp.write_text("new"), durable=durable)
    assert (tmp_path / "a.txt").read_text() == "new" and len(synced) == int(durable)
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_written_files_get_the_permissions_a_plain_open_would_give(tmp_path):
    """mkstemp's temporaries are 0600; the file moved into place must have what the umask allows (a report copied to
    a web folder must be readable there)."""
    import os
    import stat

    plain = tmp_path / "plain.json"
    plain.write_text("{}")  # created by open(): 0666 minus the umask, the oracle
    written = tmp_path / "report.html"
    write_atomic(written, lambda temp: temp.write_text("<html></html>"))
    write_json_atomic(tmp_path / "metrics.json", {"a": 1})
    expected = stat.S_IMODE(os.stat(plain).st_mode)
    assert expected & stat.S_IROTH  # the usual umasks (022, 002) let others read
    assert stat.S_IMODE(os.stat(written).st_mode) == expected
    assert stat.S_IMODE(os.stat(tmp_path / "metrics.json").st_mode) == expected
