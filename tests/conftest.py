"""Shared test setup: Triton runs under its CPU interpreter when no GPU is present.

TRITON_INTERPRET must be set before triton is first imported, so it is set here, at collection.
"""
import os
import pathlib

import pytest

if os.environ.get("TRITON_INTERPRET") is None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if not has_cuda:
        os.environ["TRITON_INTERPRET"] = "1"

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """../shared/data beside the checkout (CI has it); tests that need it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"development data not found at {SHARED_DATA}")
    return SHARED_DATA
