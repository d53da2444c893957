"""Notebook 00: the PyTorch mechanics that bite — layers in a plain list against `nn.ModuleList`, and forward hooks that record activation statistics (`mechanics`)."""
