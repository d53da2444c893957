"""The budget comparison of notebook 04: every search on one space, one objective and one seed,
counted on one axis (training epochs spent) — the course's own searches and a maintained library
route to BOHB's idea, Optuna's TPE sampler with its Hyperband pruner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from helpers.tuning.searches import (
    Objective,
    SearchResult,
    TrialRunner,
    asha,
    bohb_proposer,
    hyperband,
    random_proposer,
    run_trials,
)
from helpers.tuning.spaces import (
    Choice,
    Config,
    LogUniform,
    SearchSpace,
    Uniform,
    random_configs,
    sample_config,
    shuffled_grid,
)

SEARCHES = ("grid", "random", "ASHA", "Hyperband", "BOHB", "Optuna TPE + Hyperband")


def optuna_suggest(trial: object, space: SearchSpace) -> Config:
    """A configuration from an Optuna trial, one ``suggest_*`` call per dimension of ``space``."""
    config: Config = {}
    for name, dim in space.items():
        if isinstance(dim, LogUniform):
            config[name] = trial.suggest_float(name, dim.low, dim.high, log=True)  # type: ignore[attr-defined]
        elif isinstance(dim, Uniform):
            config[name] = trial.suggest_float(name, dim.low, dim.high)  # type: ignore[attr-defined]
        elif isinstance(dim, Choice):
            config[name] = trial.suggest_categorical(name, list(dim.values))  # type: ignore[attr-defined]
        else:
            raise TypeError(f"Unknown dimension {dim!r} for {name!r}.")
    return config


def optuna_tpe_hyperband(
    space: SearchSpace,
    objective: Objective,
    max_epochs: int,
    eta: int,
    seed: int,
    max_total_epochs: int,
    name: str = "Optuna TPE + Hyperband",
) -> SearchResult:
    """Optuna's ``TPESampler`` proposes, its ``HyperbandPruner`` stops weak trials at the rungs
    (a pairing the pruner's documentation discusses; close to BOHB). Trials run one after another
    until at least ``max_total_epochs`` epochs are spent. Every epoch goes through
    ``TrialRunner``, so the result sits on the same budget axis as the course's own searches."""
    import warnings

    import optuna

    runner = TrialRunner(objective, seed)

    def optuna_objective(trial: optuna.Trial) -> float:
        run = runner.start(optuna_suggest(trial, space))
        score = 0.0
        for epoch in range(1, max_epochs + 1):
            score = runner.train_to(run, epoch)
            trial.report(score, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return score

    def stop_at_budget(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
        if runner.epochs_used >= max_total_epochs:
            study.stop()

    with warnings.catch_warnings():  # Optuna marks multivariate=True as experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # multivariate: one joint model over all hyperparameters, as in BOHB
        sampler = optuna.samplers.TPESampler(multivariate=True, seed=seed)
    study = optuna.create_study(
        direction="maximize",
        sampler=sampler,
        pruner=optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_epochs, reduction_factor=eta
        ),
    )
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study.optimize(optuna_objective, n_trials=10 * max_total_epochs, callbacks=[stop_at_budget])
    finally:
        optuna.logging.set_verbosity(verbosity)
    return runner.result(name)


def compare_searches(
    space: SearchSpace,
    objective: Objective,
    seed: int,
    n_trials: int = 27,
    max_epochs: int = 9,
    eta: int = 3,
    searches: Sequence[str] = SEARCHES,
) -> list[SearchResult]:
    """Run each search once with the same seed. Grid uses ``round(n_trials ** (1/d))`` points per
    numeric dimension, in a shuffled order; random and ASHA draw the same ``n_trials``
    configurations (same generator seed), so ASHA's loss is due to pruning alone; Hyperband, BOHB
    and Optuna's TPE + Hyperband spend at least random search's budget (n_trials x max_epochs)."""
    unknown = set(searches) - set(SEARCHES)
    if unknown:
        raise ValueError(f"Unknown searches {sorted(unknown)}; known: {', '.join(SEARCHES)}.")
    sample = lambda rng: sample_config(space, rng)  # noqa: E731
    budget = n_trials * max_epochs
    runs: dict[str, Callable[[], SearchResult]] = {
        "grid": lambda: run_trials(
            shuffled_grid(space, n_trials, seed), objective, max_epochs, seed, "grid"
        ),
        "random": lambda: run_trials(
            random_configs(space, n_trials, seed), objective, max_epochs, seed, "random"
        ),
        "ASHA": lambda: asha(sample, objective, n_trials, 1, max_epochs, eta, seed),
        "Hyperband": lambda: hyperband(
            random_proposer(space), objective, max_epochs, eta, seed, budget
        ),
        "BOHB": lambda: hyperband(
            bohb_proposer(space), objective, max_epochs, eta, seed, budget, name="BOHB"
        ),
        "Optuna TPE + Hyperband": lambda: optuna_tpe_hyperband(
            space, objective, max_epochs, eta, seed, budget
        ),
    }
    return [runs[name]() for name in searches]
