"""A small real table, and the accuracy a scaled logistic regression reaches on it.

scikit-learn's breast cancer data (569 rows, 30 numeric columns up to about 4,000, 2 classes;
Wisconsin Diagnostic Breast Cancer, UCI) split 70/30 with a fixed seed into `train/rows.csv`
(398 rows) and `eval/rows.csv` (171 rows), columns in snake_case and an integer `label`. The
reference is scikit-learn's LogisticRegression on standardized columns, fitted on the train
rows and scored on the eval rows: what the pipeline's built-in MLP at default flags should
come close to.

    python -m bench.tabular_reference --out /tmp/breast-cancer
    scripts/in-env python -m pipelines.local_runner --data-root /tmp/breast-cancer \
        --output-dir /tmp/breast-cancer-run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re

import numpy as np

SEED = 0
EVAL_FRACTION = 0.3


def split_rows(seed: int = SEED):
    """`(names, (x_train, y_train), (x_eval, y_eval))` of the breast cancer data."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    order = np.random.default_rng(seed).permutation(len(data.target))
    cut = round(len(order) * (1 - EVAL_FRACTION))
    names = [re.sub(r"\W+", "_", name.strip()) for name in data.feature_names]
    train, evaluation = order[:cut], order[cut:]
    return (
        names,
        (data.data[train], data.target[train]),
        (data.data[evaluation], data.target[evaluation]),
    )


def write_csv_splits(root: str, seed: int = SEED) -> str:
    """Writes `root/train/rows.csv` and `root/eval/rows.csv`; returns `root`."""
    names, *splits = split_rows(seed)
    for split, (x, y) in zip(("train", "eval"), splits):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        with open(os.path.join(root, split, "rows.csv"), "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow([*names, "label"])
            writer.writerows(
                [*(f"{value:.6g}" for value in row), int(label)] for row, label in zip(x, y)
            )
    return root


def reference_accuracy(seed: int = SEED) -> dict:
    """Eval accuracy of a scaled logistic regression, and of always guessing the majority."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, (x_train, y_train), (x_eval, y_eval) = split_rows(seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(x_train, y_train)
    majority = np.bincount(y_train).argmax()
    return {
        "train_rows": len(y_train),
        "eval_rows": len(y_eval),
        "logistic_regression_accuracy": float(model.score(x_eval, y_eval)),
        "majority_accuracy": float(np.mean(y_eval == majority)),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the folder for train/ and eval/")
    args = parser.parse_args(argv)
    write_csv_splits(args.out)
    print(json.dumps(reference_accuracy(), indent=1))


if __name__ == "__main__":
    main()
