import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: one thread is faster and leaves the shared cores to other test workers."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
