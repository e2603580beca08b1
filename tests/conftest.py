import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    # Every test runs single-threaded: the core tests run thousands of ops on tensors of a few
    # dozen elements, where handing work to a second intra-op thread costs more than the op
    # (3.5 us instead of 1.2 us for a tiny softmax on this 2-core machine), and bitwise
    # comparisons (exact resumption) need the same thread count on both sides.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
