"""Phantom series written once per session."""

from __future__ import annotations

import pytest

from cases.imaging.phantom import PhantomSpec, write_series


@pytest.fixture(scope="session")
def ct_files(tmp_path_factory):
    """A small head CT series (64 x 64, 6 slices), as files."""
    folder = tmp_path_factory.mktemp("ct")
    return write_series(folder, PhantomSpec(slices=6, rows=64, columns=64, seed=7))
