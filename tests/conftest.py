"""Shared test settings: one hypothesis profile, a fixed torch seed per test, one thread.

``HYPOTHESIS_MAX_EXAMPLES`` (default 30) sets the number of examples per property; under
``CI=true`` hypothesis is derandomized so a CI run is reproducible. Tests use small tensors:
one intra-op thread per test process beats a thread pool on a shared 2-core machine (and
``-n 2`` already runs two processes). torch is optional so the linter's tests run without it.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

try:
    import torch
except ImportError:  # the linter's CI job has no torch
    torch = None

settings.register_profile(
    "dualtype",
    deadline=None,
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "30")),
    derandomize=os.environ.get("CI", "").lower() == "true",
)
settings.load_profile("dualtype")

if torch is not None:
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _torch_seed():
    if torch is not None:
        torch.manual_seed(0)
    yield
