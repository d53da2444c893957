"""Notebook 06: losses for imbalanced classes (`losses`) and resampling (`sampling`)."""
