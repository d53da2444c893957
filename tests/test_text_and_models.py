import pytest
import torch

from helpers.data import PAD, UNK, CharVocab, encode_padded
from helpers.models import GRUClassifier, TransformerClassifier


def test_vocab_is_order_independent_and_reserves_pad_and_unk():
    a = CharVocab.from_texts(["Kim", "Lee"])
    b = CharVocab.from_texts(["Lee", "Kim"])
    assert a == b
    assert len(a) == len(set("KimLee")) + 2
    assert a.encode("Kz")[1] == UNK
    assert PAD not in a.encode("Kim")


def test_encode_padded_pads_truncates_and_reports_lengths():
    vocab = CharVocab.from_texts(["abc"])
    tokens, lengths = encode_padded(["ab", "abcabc"], vocab, max_len=4)
    assert tokens.tolist() == [[2, 3, PAD, PAD], [2, 3, 4, 2]]
    assert lengths.tolist() == [2, 4]
    with pytest.raises(ValueError, match="empty"):
        encode_padded([""], vocab, 4)


@pytest.mark.parametrize("model_cls", [GRUClassifier, TransformerClassifier])
def test_padding_does_not_change_the_prediction(model_cls):
    torch.manual_seed(0)
    kwargs = {"max_len": 8} if model_cls is TransformerClassifier else {}
    model = model_cls(vocab_size=6, n_classes=3, **kwargs).eval()
    short = torch.tensor([[2, 3, 4]])
    padded = torch.tensor([[2, 3, 4, PAD, PAD, PAD]])
    with torch.no_grad():
        assert torch.allclose(model(short), model(padded), atol=1e-5)
        assert model(torch.randint(2, 6, (5, 8))).shape == (5, 3)


def test_mlp_layer_shapes_and_parameter_count():
    import pytest
    from torch import nn

    from helpers.models import mlp

    model = mlp(64, 10, hidden=32, depth=2, dropout=0.1)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 32), (32, 10)]
    assert sum(p.numel() for p in model.parameters()) == (64 * 32 + 32) + (32 * 32 + 32) + (
        32 * 10 + 10
    )
    assert sum(isinstance(m, nn.Dropout) for m in model) == 2
    assert len(mlp(4, 3, depth=0)) == 1
    with pytest.raises(ValueError, match="choose one of"):
        mlp(4, 3, activation="swishy")
