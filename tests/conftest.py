import os

# tests never reach a model hub; CI sets this too
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("nnUNet_def_n_proc", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long end-to-end chains, not run in CI (pytest -m slow runs them)")
