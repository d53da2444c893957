"""Notebook 04: search spaces (`spaces`), grid/random/successive halving/ASHA/Hyperband/BOHB
(`searches`), the budget comparison with Optuna's TPE + Hyperband (`compare`), the shared digits
objective (`objective`), the LR range test (`lr_range`), and Ray Tune on a local cluster
(`raytune`)."""
