"""Fixtures of the continual tests: one torch thread while they run (2 shared cores: OpenMP threads
that spin against other processes are many times slower), restored afterwards."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
