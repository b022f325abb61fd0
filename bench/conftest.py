import pytest


def pytest_addoption(parser):
    parser.addoption("--bench-max-size", type=int, default=2**26,
                     help="largest param size to benchmark (default 2^26)")


@pytest.fixture(scope="session")
def torch():
    try:
        import torch
    except ImportError:
        return None
    return torch
