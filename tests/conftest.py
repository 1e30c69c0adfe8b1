"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import tapegrad


@pytest.fixture
def numpy_kernels() -> Iterator[None]:
    """Run the test on the NumPy kernels (level groups and folded chains), whichever
    kernels the suite runs on: for tests that inspect that schedule's parts."""
    previous = tapegrad.set_kernels("numpy")
    try:
        yield
    finally:
        tapegrad.set_kernels(previous)
