"""Offline datasets from scikit-learn's bundled loaders, standardised, with a seeded split.

Nothing is downloaded: ``load_diabetes`` (regression, 442 × 10), ``load_breast_cancer`` (binary,
569 × 30) and ``load_wine`` (3 classes, 178 × 13) ship inside scikit-learn.  Features are
standardised with the *training* mean and standard deviation (so the test set sees no test
statistics); regression targets likewise.  The split is a seeded permutation: the same ``seed``
gives the same split on every machine.

Example:
    >>> from problems.datasets import load_breast_cancer
    >>> data = load_breast_cancer(seed=0, add_bias=True)
    >>> data.X_train.shape[1]
    31
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Dataset", "load", "load_diabetes", "load_breast_cancer", "load_wine", "names"]

_TASKS = {"diabetes": "regression", "breast_cancer": "binary", "wine": "multiclass"}


@dataclass(frozen=True)
class Dataset:
    """A standardised train/test split.

    Attributes:
        name: "diabetes", "breast_cancer" or "wine".
        task: "regression", "binary" or "multiclass".
        X_train, y_train, X_test, y_test: float64 arrays (labels as floats 0., 1., …).
        feature_names: names of the columns of X (``"bias"`` last when ``add_bias``).
        x_mean, x_std: the training statistics used to standardise X (without the bias column).
        y_mean, y_std: the same for a regression target (0 and 1 for classification).
    """

    name: str
    task: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: tuple[str, ...]
    x_mean: np.ndarray = field(repr=False)
    x_std: np.ndarray = field(repr=False)
    y_mean: float = 0.0
    y_std: float = 1.0

    @property
    def dim(self) -> int:
        return self.X_train.shape[1]


def names() -> tuple[str, ...]:
    return tuple(_TASKS)


def _sklearn_loader(name: str):
    try:
        import sklearn.datasets as skd
    except ImportError as exc:  # pragma: no cover - scikit-learn is a dev/bench dependency
        raise ImportError("problems.datasets needs scikit-learn (pip install scikit-learn)") from exc
    return {"diabetes": skd.load_diabetes, "breast_cancer": skd.load_breast_cancer,
            "wine": skd.load_wine}[name]


def load(name: str, *, test_fraction: float = 0.2, seed: int = 0, add_bias: bool = False,
         binary_class: int | None = None) -> Dataset:
    """Load a bundled dataset, split it with a seeded permutation and standardise it.

    Args:
        name: one of ``names()``.
        test_fraction: share of rows held out, in [0, 1).  0 puts every row in the training set.
        seed: seed of the permutation that defines the split.
        add_bias: append a column of ones (after standardisation) for an intercept.
        binary_class: for "wine", turn the labels into 1 for this class and 0 otherwise
            (one-vs-rest), for binary models.
    """
    if name not in _TASKS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(names())}")
    if not (0.0 <= float(test_fraction) < 1.0):
        raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction!r}")
    raw = _sklearn_loader(name)()
    X = np.asarray(raw.data, dtype=np.float64)
    y = np.asarray(raw.target, dtype=np.float64)
    task = _TASKS[name]
    if binary_class is not None:
        if task != "multiclass":
            raise ValueError(f"binary_class applies to multiclass data sets only, not {name!r}")
        classes = np.unique(y)
        if binary_class not in classes:
            raise ValueError(f"binary_class must be one of {classes.astype(int).tolist()}, "
                             f"got {binary_class!r}")
        y, task = (y == binary_class).astype(np.float64), "binary"
    perm = np.random.default_rng(seed).permutation(X.shape[0])
    n_test = int(round(test_fraction * X.shape[0]))
    test, train = perm[:n_test], perm[n_test:]
    x_mean, x_std = X[train].mean(0), X[train].std(0)
    x_std = np.where(x_std > 0, x_std, 1.0)
    Xs = (X - x_mean) / x_std
    y_mean, y_std = 0.0, 1.0
    if task == "regression":
        y_mean, y_std = float(y[train].mean()), float(y[train].std())
        y = (y - y_mean) / y_std
    feature_names = tuple(str(f) for f in raw.feature_names)
    if add_bias:
        Xs = np.concatenate([Xs, np.ones((Xs.shape[0], 1))], axis=1)
        feature_names = (*feature_names, "bias")
    return Dataset(name, task, Xs[train], y[train], Xs[test], y[test], feature_names,
                   x_mean, x_std, y_mean, y_std)


def load_diabetes(**kw) -> Dataset:
    """Diabetes progression (442 × 10, regression); see ``load`` for the keywords."""
    return load("diabetes", **kw)


def load_breast_cancer(**kw) -> Dataset:
    """Wisconsin breast cancer (569 × 30, labels 0 malignant / 1 benign); see ``load``."""
    return load("breast_cancer", **kw)


def load_wine(**kw) -> Dataset:
    """Wine cultivars (178 × 13, 3 classes; ``binary_class=c`` for one-vs-rest); see ``load``."""
    return load("wine", **kw)
