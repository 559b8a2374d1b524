import os

import pytest

# tests never reach a model hub; CI sets this too
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("nnUNet_def_n_proc", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long end-to-end chains, not run in CI (pytest -m slow runs them)")


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of small-tensor tests (`pytestmark = pytest.mark.usefixtures(...)`): on a
    shared 2-core machine OpenMP threads waiting for each other cost more than they save (a forward/backward
    there runs 20-40x faster on one thread under load)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
