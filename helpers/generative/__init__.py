"""Notebook 07: the GAN of Goodfellow et al. (2014), its theory on a grid and its evaluation (`gan`)."""
