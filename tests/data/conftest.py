"""Fixtures of the data tests: one read-only data root holding a miniature replica of every benchmark."""

from __future__ import annotations

import pytest

from tests.data.replicas import Expected, build_benchmarks


@pytest.fixture(scope="session")
def replica_root(tmp_path_factory):
    """``(root, expected)``: a data root with every benchmark layout. Tests must not modify it."""
    root = tmp_path_factory.mktemp("data_root")
    expected: dict[str, Expected] = build_benchmarks(root)
    return root, expected
