"""Notebook 08: GA operators (`operators`), the GA loop (`ga`), evolution strategies (`es`) and the cart-pole task (`cartpole`)."""
