"""Tiny float64 tensors: one intra-op thread is faster than a thread pool on a shared machine."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
