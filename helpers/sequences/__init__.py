"""Notebook 10: length bucketing and packing (`bucketing`), and sequence-to-sequence models with teacher forcing (`seq2seq`)."""
