"""Shared fixtures of the SB3 integration tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """sb3's small networks run fastest on one thread (and CI's cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
