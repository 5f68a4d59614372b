"""The Python LightGBM side of the probe (gbm/examples/probe.rs writes the table and runs this).

Reads DIR/table.csv, fits exactly what the Rust side fits on the same rows, and prints one line
per forecaster: name|mae30|mae60|mae120|fit_seconds|fit_cpu_seconds|predict_seconds. Fit time includes building
the Dataset (LightGBM bins there), as the Rust fit time includes binning.
"""
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import lightgbm as lgb
import numpy as np

TEST_FIRST = 17_148
VALIDATION_FIRST = 17_134
TEST_LAST = 17_154
HORIZONS = (1, 2, 4)


def params(objective, threads=2):
    return {
        "objective": objective,
        "num_leaves": 31,
        "learning_rate": 0.05,
        "min_data_in_leaf": 20,
        "num_threads": threads,
        "verbose": -1,
        "seed": 0,
        "deterministic": True,
    }


def mae_by_horizon(predictions, targets, horizons):
    return [float(np.mean(np.abs(predictions[horizons == h] - targets[horizons == h]))) for h in HORIZONS]


def fit(objective, x, y, threads=2):
    started, started_cpu = time.perf_counter(), time.process_time()
    booster = lgb.train(params(objective, threads), lgb.Dataset(x, label=y), num_boost_round=500)
    return booster, (time.perf_counter() - started, time.process_time() - started_cpu)


def pipeline_jobs(day, horizon):
    """The pipeline's fits: per horizon a validation fit and a test fit, as (training rows, scored
    rows, whether the scored rows are the test week)."""
    jobs = []
    for h in HORIZONS:
        for train_until, score_from, score_until in (
            (VALIDATION_FIRST, VALIDATION_FIRST, TEST_FIRST - 1),
            (TEST_FIRST, TEST_FIRST, TEST_LAST),
        ):
            rows = (horizon == h) & (day < train_until)
            scored = (horizon == h) & (day >= score_from) & (day <= score_until)
            jobs.append((rows, scored, score_from == TEST_FIRST))
    return jobs


def score_pipeline(boosters, jobs, features, target, horizon):
    """Every fit predicts its scored rows; the MAE over the test week's, and the predict time."""
    predictions_all, targets_all, horizons_all, predict_total = [], [], [], 0.0
    for booster, (_, scored, test) in zip(boosters, jobs):
        started = time.perf_counter()
        predictions = booster.predict(features[scored], num_threads=2)
        predict_total += time.perf_counter() - started
        if test:
            predictions_all.append(predictions)
            targets_all.append(target[scored])
            horizons_all.append(horizon[scored])
    mae = mae_by_horizon(np.concatenate(predictions_all), np.concatenate(targets_all), np.concatenate(horizons_all))
    return mae, predict_total


def main():
    table = np.genfromtxt(f"{sys.argv[1]}/table.csv", delimiter=",", skip_header=1)
    day, horizon, target, features = table[:, 0], table[:, 1], table[:, 2], table[:, 3:]
    train, test = day < TEST_FIRST, day >= TEST_FIRST
    for name, objective in (("LightGBM L2", "regression"), ("LightGBM L1", "regression_l1")):
        booster, (fit_seconds, fit_cpu) = fit(objective, features[train], target[train])
        started = time.perf_counter()
        predictions = booster.predict(features[test], num_threads=2)
        predict_seconds = time.perf_counter() - started
        mae = mae_by_horizon(predictions, target[test], horizon[test])
        print(f"{name}|{mae[0]}|{mae[1]}|{mae[2]}|{fit_seconds}|{fit_cpu}|{predict_seconds}")
    # The pipeline: one L1 model per horizon, a validation fit and a test fit each, one after another.
    jobs = pipeline_jobs(day, horizon)
    fit_total, fit_cpu_total, boosters = 0.0, 0.0, []
    for rows, _, _ in jobs:
        booster, (fit_seconds, fit_cpu) = fit("regression_l1", features[rows], target[rows])
        boosters.append(booster)
        fit_total += fit_seconds
        fit_cpu_total += fit_cpu
    mae, predict_total = score_pipeline(boosters, jobs, features, target, horizon)
    print(f"pipeline: LightGBM L1, 3 horizons x 2 fits|{mae[0]}|{mae[1]}|{mae[2]}|{fit_total}|{fit_cpu_total}|{predict_total}")
    # The same six fits side by side, one LightGBM thread each on two Python threads (LightGBM
    # releases the GIL while it trains), as the Rust side's "side by side" row runs them.
    started, started_cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=2) as pool:
        boosters = list(
            pool.map(lambda job: fit("regression_l1", features[job[0]], target[job[0]], threads=1)[0], jobs)
        )
    fit_total, fit_cpu_total = time.perf_counter() - started, time.process_time() - started_cpu
    mae, predict_total = score_pipeline(boosters, jobs, features, target, horizon)
    print(f"pipeline: LightGBM L1, the 6 fits side by side|{mae[0]}|{mae[1]}|{mae[2]}|{fit_total}|{fit_cpu_total}|{predict_total}")


if __name__ == "__main__":
    main()
