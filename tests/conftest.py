"""Shared test settings: one hypothesis profile and a fixed torch seed per test.

``HYPOTHESIS_MAX_EXAMPLES`` (default 30) sets the number of examples per property; under
``CI=true`` hypothesis is derandomized so a CI run is reproducible.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

settings.register_profile(
    "dualtype",
    deadline=None,
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "30")),
    derandomize=os.environ.get("CI", "").lower() == "true",
)
settings.load_profile("dualtype")


@pytest.fixture(autouse=True)
def _torch_seed():
    torch.manual_seed(0)
    yield
