"""The exported (TorchScript) model equals the eager one on inputs of other shapes than the
trace example, survives a save/load round trip, and the comparison detects a real difference."""

import pytest
import torch

from helpers.data import CharVocab, encode_padded, load_surnames
from helpers.models import GRUClassifier
from helpers.serving.export import (
    export_torchscript,
    load_torchscript,
    max_output_diff,
    save_torchscript,
)


@pytest.fixture(scope="module")
def model_and_batches():
    names = load_surnames()["surname"].tolist()
    vocab = CharVocab.from_texts(names)
    torch.manual_seed(0)
    model = GRUClassifier(len(vocab), 5, embed_dim=8, hidden=24).eval()
    batches = [
        encode_padded(names[i : i + n], vocab, 24)[0]
        for i, n in [(0, 1), (5, 3), (50, 40), (900, 128)]
    ]
    # the Predictor pads a batch only to its longest text: narrower tensors than the trace's
    for width in (3, 7, 12):
        group = [n for n in names if len(n) == width][:1] + [n for n in names if len(n) < width][:8]
        batches.append(encode_padded(group, vocab, width)[0])
    assert {b.shape[1] for b in batches} == {3, 7, 12, 24}
    return model, batches


def test_export_equals_eager_on_every_shape(model_and_batches, tmp_path, one_torch_thread):
    model, batches = model_and_batches
    exported = export_torchscript(model, batches[2])
    assert max_output_diff(model, exported, batches) <= 1e-5
    reloaded = load_torchscript(save_torchscript(exported, tmp_path / "m.pt"))
    assert max_output_diff(model, reloaded, batches) <= 1e-5
    # a batch with a single character per name: lengths unlike the trace example's
    short = batches[3].clone()
    short[:, 1:] = 0
    assert max_output_diff(model, reloaded, [short]) <= 1e-5


def test_the_comparison_sees_a_changed_model(model_and_batches, one_torch_thread):
    model, batches = model_and_batches
    exported = export_torchscript(model, batches[2])
    other = GRUClassifier(model.embed.num_embeddings, 5, embed_dim=8, hidden=24).eval()
    assert max_output_diff(other, exported, batches) > 1e-3
    nudged = GRUClassifier(model.embed.num_embeddings, 5, embed_dim=8, hidden=24).eval()
    nudged.load_state_dict(model.state_dict())
    with torch.no_grad():
        nudged.head.bias[0] += 1e-3  # a change just above the tolerance is still seen
    assert max_output_diff(model, export_torchscript(nudged, batches[2]), batches) > 1e-5


def test_load_of_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No exported model"):
        load_torchscript(tmp_path / "absent.pt")
