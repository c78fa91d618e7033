"""RankSVD in a scikit-learn pipeline on the digits, beside PCA's own rank choices.

Run: .venv/bin/python benchmarks/sklearn_digits.py [--cv 5]
StandardScaler → reducer → LogisticRegression on ``load_digits`` (1797 × 64): for each
reducer, the components it keeps (on the whole data), the cross-validated accuracy and
the mean fit time of the pipeline, all in one process.
"""

from __future__ import annotations

import argparse

from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from matrank.sklearn import RankSVD


def kept(reducer, X) -> int:
    fitted = make_pipeline(StandardScaler(), reducer).fit(X)[-1]
    return int(getattr(fitted, "n_components_", X.shape[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv", type=int, default=5)
    args = parser.parse_args()
    X, y = load_digits(return_X_y=True)
    reducers = {
        "none": "passthrough",
        "RankSVD() (plateau rule)": RankSVD(random_state=0),
        "RankSVD(threshold='floor')": RankSVD(threshold="floor", random_state=0),
        "PCA(n_components='mle')": PCA(n_components="mle"),
        "PCA(n_components=0.95)": PCA(n_components=0.95),
    }
    print(f"{'reducer':30s} {'components':>10s} {'accuracy':>9s} {'±':>6s} {'fit s':>7s}")
    for name, reducer in reducers.items():
        pipeline = make_pipeline(
            StandardScaler(), reducer, LogisticRegression(max_iter=3000)
        )
        scores = cross_validate(pipeline, X, y, cv=args.cv)
        components = X.shape[1] if reducer == "passthrough" else kept(reducer, X)
        accuracy = scores["test_score"]
        print(
            f"{name:30s} {components:10d} {accuracy.mean():9.4f} "
            f"{accuracy.std(ddof=1) / len(accuracy) ** 0.5:6.4f} {scores['fit_time'].mean():7.3f}"
        )


if __name__ == "__main__":
    main()
