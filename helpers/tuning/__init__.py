"""Notebook 04: search spaces, grid/random/successive halving/ASHA/Hyperband/BOHB (`search`), and Ray Tune on a local cluster (`raytune`)."""
