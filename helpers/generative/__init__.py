"""Notebook 07: the GAN of Goodfellow et al. (2014): networks, losses and Algorithm 1 (`gan`),
its theory on a grid (`theory`) and its evaluation (`evaluation`)."""
