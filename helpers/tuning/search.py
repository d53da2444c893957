"""Deprecated: the old single module of ``helpers.tuning``, now split into ``spaces``, ``searches``,
``compare``, ``objective`` and ``lr_range``. Kept only so notebook 08's
``from helpers.tuning.search import digits_split, train_digits_mlp`` runs until that line reads
``from helpers.tuning.objective import digits_split, train_digits_mlp``; then delete this file.
"""

from helpers.tuning.objective import digits_split, train_digits_mlp

__all__ = ["digits_split", "train_digits_mlp"]
