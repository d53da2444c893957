"""Notebook 09: number formats, non-finite detection and precision trials (`numerics`); memory readings, the saved-tensor meter and OOM back-off (`memory`)."""
