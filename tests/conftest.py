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

def pytest_report_header(config):
    import amad_fast

    lines = [f"amad_fast {amad_fast.__version__} from {pathlib.Path(amad_fast.__file__).parent}"]
    lines += [f"  {status}" for status in amad_fast.available_backends().values()]
    return lines


def pytest_sessionstart(session):
    """Fail fast when a backend the run requires (AMAD_FAST_REQUIRE_BACKENDS) did not build."""
    required = [b for b in os.environ.get("AMAD_FAST_REQUIRE_BACKENDS", "").split(",") if b]
    if not required:
        return
    import amad_fast

    status = amad_fast.available_backends()
    missing = [f"{name}: {status[name].reason if name in status else 'no such backend'}"
               for name in required if name not in status or not status[name].available]
    if missing:
        raise pytest.UsageError("required backends unavailable: " + "; ".join(missing))


SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """../shared/data beside the checkout (CI has it); tests that need it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"development data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (``item.rep_call``...), for fixtures that check
    something at teardown only when the test itself passed (test_reliability's ``shown``)."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
