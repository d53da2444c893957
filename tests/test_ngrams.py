import pytest
import torch

from helpers.finetune.ngrams import NgramVocab, char_ngrams


def test_char_ngrams_mark_both_ends():
    assert char_ngrams("ab") == ["^", "a", "b", "$", "^a", "ab", "b$", "^ab", "ab$"]
    assert char_ngrams("ab", orders=(2,)) == ["^a", "ab", "b$"]
    with pytest.raises(ValueError):
        char_ngrams("ab", orders=(0,))


def test_vocab_counts_texts_not_occurrences_and_breaks_ties_alphabetically():
    vocab = NgramVocab.from_texts(["aa", "ab"], max_size=4, orders=(1,))
    # "a" is in 2 texts (counted once in "aa"), "^" and "$" in 2, "b" in 1.
    assert vocab.grams == ("$", "^", "a", "b")
    assert NgramVocab.from_texts(["ab", "aa"], 4, (1,)) == vocab
    assert len(NgramVocab.from_texts(["abc", "abd"], max_size=3)) == 3
    with pytest.raises(ValueError):
        NgramVocab.from_texts(["a"], max_size=0)


def test_encode_marks_present_ngrams_and_ignores_unknown_ones():
    vocab = NgramVocab(("^K", "im", "zz"), orders=(2,))
    features = vocab.encode(["Kim", "Lee"])
    assert features.dtype == torch.float32
    assert features.tolist() == [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
