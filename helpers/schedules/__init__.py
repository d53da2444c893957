"""Notebook 05: learning-rate schedules built by name and traced step by step (`lr`)."""
