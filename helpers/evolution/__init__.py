"""Notebook 08: genetic algorithms and evolution strategies (`algorithms`) and the cart-pole task (`cartpole`)."""
