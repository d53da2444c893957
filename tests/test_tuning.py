"""Tests for helpers.tuning: spaces, searches on synthetic objectives (against brute force and the
papers' tables), Optuna's TPE + Hyperband route, the digits objective and its splits, LR range test."""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import islice

import numpy as np
import pytest
import torch
from scipy import stats

from helpers.models import mlp
from helpers.tuning.compare import SEARCHES, compare_searches, optuna_tpe_hyperband
from helpers.tuning.lr_range import endless_batches, lr_range_test, suggest_lr_bounds
from helpers.tuning.objective import digits_split, held_out, train_digits_mlp
from helpers.tuning.searches import (
    TrialRunner,
    asha,
    best_at_budget,
    bohb_proposer,
    hyperband,
    hyperband_brackets,
    random_proposer,
    run_trials,
    rung_epochs,
    rung_sizes,
    successive_halving,
)
from helpers.tuning.spaces import (
    Choice,
    Config,
    LogUniform,
    Uniform,
    decode,
    encode,
    grid_configs,
    log_uniform,
    sample_config,
    shuffled_grid,
    zoom,
)

SPACE = {"lr": LogUniform(1e-4, 1.0), "momentum": Uniform(0.0, 0.99), "width": Choice((16, 32, 64))}


def quality(config: Config) -> float:
    """A synthetic objective's final score: best at lr = 1e-2, width 64."""
    return 1.0 - 0.1 * (math.log10(float(config["lr"])) + 2) ** 2 - 0.01 * (config["width"] != 64)


def learning_curve(config: Config, seed: int) -> Iterator[float]:
    """Scores rise towards quality(config); the ranking never changes with the epoch."""
    for epoch in range(1, 1000):
        yield quality(config) * (1 - 0.5**epoch)


def test_log_uniform_is_uniform_in_log_space() -> None:
    rng = np.random.default_rng(0)
    draws = np.array([log_uniform(1e-5, 1e-1, rng) for _ in range(4000)])
    assert draws.min() >= 1e-5 and draws.max() <= 1e-1
    assert stats.kstest((np.log10(draws) + 5) / 4, "uniform").pvalue > 0.01
    assert 0.2 < np.mean(draws < 1e-4) < 0.3  # one decade in four


def test_dimensions_round_trip_through_the_unit_cube() -> None:
    config = {"lr": 3e-3, "momentum": 0.5, "width": 32}
    point = encode(SPACE, config)
    assert np.all((point >= 0) & (point <= 1))
    back = decode(SPACE, point)
    assert (
        back["width"] == 32
        and back["lr"] == pytest.approx(3e-3)
        and back["momentum"] == pytest.approx(0.5)
    )
    with pytest.raises(ValueError, match="0 < low < high"):
        LogUniform(0.0, 1.0)


def test_grid_is_a_product_with_log_spaced_ends() -> None:
    configs = grid_configs(SPACE, 3)
    assert len(configs) == 3 * 3 * 3
    lrs = sorted({c["lr"] for c in configs})
    assert lrs == pytest.approx([1e-4, 1e-2, 1.0])
    assert len(grid_configs(SPACE, {"lr": 4, "momentum": 2, "width": 0})) == 4 * 2 * 3


def test_random_search_tries_more_distinct_values_of_each_dimension_than_a_grid() -> None:
    rng = np.random.default_rng(0)
    grid = grid_configs({"lr": SPACE["lr"], "momentum": SPACE["momentum"]}, 3)
    randoms = [
        sample_config({"lr": SPACE["lr"], "momentum": SPACE["momentum"]}, rng)
        for _ in range(len(grid))
    ]
    assert len({c["lr"] for c in grid}) == 3
    assert len({c["lr"] for c in randoms}) == 9


def test_zoom_narrows_around_the_best_and_stays_inside() -> None:
    best = [{"lr": 1e-2, "momentum": 0.5, "width": 64}, {"lr": 3e-2, "momentum": 0.6, "width": 64}]
    narrow = zoom(SPACE, best, margin=0.05)
    assert (
        SPACE["lr"].low <= narrow["lr"].low < 1e-2 and 3e-2 < narrow["lr"].high <= SPACE["lr"].high
    )
    assert math.log(narrow["lr"].high / narrow["lr"].low) < 0.5 * math.log(
        SPACE["lr"].high / SPACE["lr"].low
    )
    assert narrow["width"].values == (64,)
    assert 0.0 <= narrow["momentum"].low < 0.5 and 0.6 < narrow["momentum"].high <= 0.99


def test_rungs_grow_by_eta_and_keep_one_in_eta() -> None:
    assert rung_epochs(1, 27, 3) == [1, 3, 9, 27]
    assert rung_epochs(2, 20, 2) == [2, 4, 8, 16]
    assert rung_sizes(81, 4, 3) == [81, 27, 9, 3]
    with pytest.raises(ValueError):
        rung_epochs(1, 9, 1)


def test_hyperband_brackets_match_the_paper() -> None:
    # Li et al. (2018), Table 1: R = 81, eta = 3.
    assert hyperband_brackets(81, 3) == [(81, 1), (34, 3), (15, 9), (8, 27), (5, 81)]


def test_successive_halving_keeps_the_best_and_spends_the_formula() -> None:
    rng = np.random.default_rng(1)
    configs = [sample_config(SPACE, rng) for _ in range(27)]
    result = successive_halving(configs, learning_curve, 1, 9, 3, seed=0)
    frame = result.trials_frame()
    assert sorted(frame["epochs"].value_counts().to_dict().items()) == [(1, 18), (3, 6), (9, 3)]
    assert result.epochs_used == 27 * 1 + 9 * 2 + 3 * 6
    best = max(configs, key=quality)
    assert result.best_config == best
    survivors = frame[frame["epochs"] == 9]
    top3 = sorted((quality(c) for c in configs), reverse=True)[:3]
    assert sorted(
        survivors.apply(lambda row: quality(configs[row.name]), axis=1), reverse=True
    ) == pytest.approx(top3)


def test_asha_promotes_the_top_fraction_and_finds_the_best() -> None:
    sample = lambda rng: sample_config(SPACE, rng)  # noqa: E731
    result = asha(sample, learning_curve, n_trials=27, min_epochs=1, max_epochs=9, eta=3, seed=2)
    frame = result.trials_frame()
    assert len(frame) == 27
    reached = {budget: int((frame["epochs"] >= budget).sum()) for budget in (1, 3, 9)}
    assert reached[1] == 27
    # At least what synchronous halving keeps, and a few more: early promotions see few results.
    assert 27 // 3 <= reached[3] <= 27 // 3 + 3 and 27 // 9 <= reached[9] <= reached[3] // 3 + 2
    for budget, next_budget in ((1, 3), (3, 9)):
        rung = frame[frame["epochs"] >= budget]
        log = result.frame().set_index(["trial", "epoch"])["score"]
        rung_scores = [log[(t, budget)] for t in rung.index]
        top = rung.index[np.argsort(rung_scores)[::-1][: len(rung) // 3]]
        assert (frame.loc[top, "epochs"] >= next_budget).all()
    assert result.best_score == pytest.approx(
        max(quality(c) for c in result.configs) * (1 - 0.5**9)
    )
    random_cost = 27 * 9
    assert result.epochs_used <= random_cost / 3


def test_run_trials_trains_every_config_fully_and_best_at_budget() -> None:
    configs = grid_configs(SPACE, 2)
    result = run_trials(configs, learning_curve, 4, seed=0, name="grid")
    assert result.epochs_used == len(configs) * 4
    assert set(result.trials_frame()["epochs"]) == {4}
    first, full = best_at_budget(result, [4, result.epochs_used])
    assert first == pytest.approx(quality(configs[0]) * (1 - 0.5**4)) and full == result.best_score


def test_hyperband_spends_its_budget_in_brackets() -> None:
    result = hyperband(random_proposer(SPACE), learning_curve, 9, 3, seed=0, max_total_epochs=60)
    frame = result.trials_frame()
    assert result.epochs_used >= 60
    assert len(frame) >= 9 + 5 + 3  # at least one full round of brackets
    assert set(frame["epochs"]) <= {1, 3, 9}


def test_bohb_proposals_concentrate_where_scores_are_high() -> None:
    rng = np.random.default_rng(0)
    history = hyperband(random_proposer(SPACE), learning_curve, 9, 3, seed=0, max_total_epochs=60)
    runner = TrialRunner(learning_curve, 0)
    for config in history.configs:
        runner.train_to(runner.start(config), 3)
    model_based = bohb_proposer(SPACE, random_fraction=0.0)
    proposed = [model_based(rng, runner.trials) for _ in range(60)]
    randoms = [sample_config(SPACE, rng) for _ in range(60)]
    distance = lambda cs: np.median([abs(math.log10(float(c["lr"])) + 2) for c in cs])  # noqa: E731
    assert distance(proposed) < 0.6 * distance(randoms)
    assert (
        np.mean([c["width"] == 64 for c in proposed])
        > np.mean([c["width"] == 64 for c in randoms]) + 0.2
    )


def test_bohb_samples_at_random_before_it_has_a_model() -> None:
    rng = np.random.default_rng(0)
    proposer = bohb_proposer(SPACE, random_fraction=0.0)
    configs = [proposer(rng, []) for _ in range(200)]
    assert 0.15 < np.mean([c["lr"] < 1e-3 for c in configs]) < 0.35


@pytest.fixture(scope="module")
def digits() -> object:
    return digits_split()


def test_digits_objective_learns_and_is_deterministic(digits, one_torch_thread) -> None:
    good = list(islice(train_digits_mlp({"lr": 1e-2}, 0, digits), 4))
    again = list(islice(train_digits_mlp({"lr": 1e-2}, 0, digits), 4))
    assert good == again
    assert good[-1] > 0.9
    too_small = list(islice(train_digits_mlp({"lr": 1e-6}, 0, digits), 2))
    assert too_small[-1] < 0.3
    assert len(digits.y_val) == 450 and len(digits.y_train) == 1347


def test_digits_objective_rejects_unknown_names(digits) -> None:
    with pytest.raises(ValueError, match="Unknown hyperparameters"):
        next(train_digits_mlp({"learning_rate": 1e-2}, 0, digits))
    with pytest.raises(ValueError, match="Unknown schedule"):
        next(train_digits_mlp({"schedule": "cosine"}, 0, digits))


def test_one_cycle_schedule_runs_for_the_given_epochs(digits, one_torch_thread) -> None:
    scores = list(train_digits_mlp({"lr": 3e-2, "schedule": "one_cycle"}, 0, digits, epochs=3))
    assert len(scores) == 3 and scores[-1] > 0.9


def test_objective_trains_the_course_mlp_one_step_like_a_hand_written_adamw_loop(
    digits, one_torch_thread
) -> None:
    """One epoch of the objective with a full batch equals one AdamW step written out by hand."""
    config = {"lr": 1e-2, "batch_size": len(digits.y_train), "width": 32, "depth": 2}
    got = next(train_digits_mlp(config, 7, digits))
    torch.manual_seed(7)
    model = mlp(64, 10, hidden=32, depth=2)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-2, weight_decay=1e-2, betas=(0.9, 0.999)
    )
    torch.nn.functional.cross_entropy(model(digits.x_train), digits.y_train).backward()
    optimizer.step()
    with torch.no_grad():
        expected = (model(digits.x_val).argmax(1) == digits.y_val).float().mean().item()
    assert got == pytest.approx(expected, abs=1e-6)


def test_digits_split_with_a_test_set_is_disjoint_stratified_and_sized() -> None:
    data = digits_split(val_fraction=0.2, seed=0, test_fraction=0.2)
    sizes = [len(data.y_train), len(data.y_val), len(data.y_test)]
    assert sum(sizes) == 1797 and abs(sizes[1] - 359) <= 1 and abs(sizes[2] - 360) <= 1
    rows = lambda x: {tuple(r) for r in x.numpy().round(4)}  # noqa: E731
    train, val, test = rows(data.x_train), rows(data.x_val), rows(data.x_test)
    duplicates = len(train) + len(val) + len(test) - len(train | val | test)
    # The digits hold a handful of identical images; the indices themselves are disjoint.
    assert duplicates <= 5
    for part in (data.y_val, data.y_test):
        shares = torch.bincount(part, minlength=10) / len(part)
        assert (
            shares - torch.bincount(data.y_train, minlength=10) / len(data.y_train)
        ).abs().max() < 0.02
    swapped = held_out(data)
    assert torch.equal(swapped.x_val, data.x_test) and torch.equal(swapped.x_train, data.x_train)
    with pytest.raises(ValueError, match="no test set"):
        held_out(digits_split())
    with pytest.raises(ValueError, match="test_fraction"):
        digits_split(val_fraction=0.5, test_fraction=0.6)


def test_lr_range_test_grows_the_lr_and_reads_sensible_bounds(digits, one_torch_thread) -> None:
    torch.manual_seed(0)
    model = mlp(64, 10, hidden=64, depth=1)
    optimizer = torch.optim.AdamW(model.parameters())
    batches = endless_batches(digits.x_train, digits.y_train, 64, seed=0)
    frame = lr_range_test(model, optimizer, batches, 1e-5, 10.0, steps=200)
    assert frame["lr"].is_monotonic_increasing and frame["lr"].iloc[0] == pytest.approx(1e-5)
    assert len(frame) < 200  # stopped once the loss blew up at the high end
    base, peak = suggest_lr_bounds(frame["lr"], frame["smoothed_loss"])
    assert 1e-4 < base < peak < 1.0


def test_suggest_lr_bounds_on_a_known_curve() -> None:
    lrs = np.logspace(-5, 0, 51)
    losses = (
        2.0
        - 1.5 / (1 + np.exp(-(np.log10(lrs) + 3) * 3))
        + np.where(lrs > 1e-1, 10 * (lrs - 1e-1), 0)
    )
    base, peak = suggest_lr_bounds(lrs, losses)
    assert peak == pytest.approx(1e-1, rel=0.3)
    assert 1e-4 < base < 1e-3
    with pytest.raises(ValueError, match="never fell"):
        suggest_lr_bounds(lrs, np.linspace(1, 2, 51))


def test_optuna_tpe_with_hyperband_pruning_finds_the_best_region_and_prunes() -> None:
    pytest.importorskip("optuna")
    result = optuna_tpe_hyperband(
        SPACE, learning_curve, max_epochs=9, eta=3, seed=0, max_total_epochs=243
    )
    frame = result.trials_frame()
    assert 243 <= result.epochs_used < 243 + 9
    assert frame["epochs"].min() < 9 and frame["epochs"].max() == 9  # pruned some, finished some
    assert len(frame) > 27  # pruning bought more trials than random search's 27 for the budget
    # Brute force: the best quality over a fine grid of the space is 1.0 (lr = 1e-2, width 64).
    brute = max(quality(c) for c in grid_configs(SPACE, 41))
    assert result.best_score > 0.97 * brute * (1 - 0.5**9)


def test_compare_searches_shares_configs_and_budgets() -> None:
    results = compare_searches(SPACE, learning_curve, seed=3, n_trials=27, max_epochs=9, eta=3)
    by_name = {r.name: r for r in results}
    assert (
        list(by_name)
        == list(SEARCHES)
        == ["grid", "random", "ASHA", "Hyperband", "BOHB", "Optuna TPE + Hyperband"]
    )
    assert by_name["random"].configs == by_name["ASHA"].configs
    assert by_name["grid"].epochs_used == by_name["random"].epochs_used == 27 * 9
    assert by_name["ASHA"].epochs_used <= 27 * 9 / 3
    assert all(
        by_name[n].epochs_used >= 27 * 9 for n in ("Hyperband", "BOHB", "Optuna TPE + Hyperband")
    )
    grid = shuffled_grid(SPACE, 27, seed=0)
    assert len(grid) == 27 and grid != grid_configs(SPACE, 3)
    assert sorted(map(str, grid)) == sorted(map(str, grid_configs(SPACE, 3)))
    with pytest.raises(ValueError, match="Unknown searches"):
        compare_searches(SPACE, learning_curve, 0, searches=("TPE",))


def test_tuning_budget_benchmark_prints_its_headline(capsys, one_torch_thread) -> None:
    import importlib.util

    from helpers import REPO_ROOT

    spec = importlib.util.spec_from_file_location(
        "tuning_budget", REPO_ROOT / "benchmarks" / "tuning_budget.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--seeds", "1", "--trials", "9", "--max-epochs", "3"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    fields = dict(item.split("=") for item in last.split())
    assert set(fields) == {"asha_epoch_fraction", "asha_score_gap"}
    assert 0 < float(fields["asha_epoch_fraction"]) < 1
