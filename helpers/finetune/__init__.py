"""Notebook 11: fine-tuning recipes (`recipes`) and the n-gram pretraining task (`ngrams`)."""
