"""Datasets for ``padam compare``, all offline, as NumPy arrays (no framework imported here).

* ``mnist1d`` (the default): MNIST-1D (Greydanus, 2020), 4000 train / 1000 test signals of length
  40, ten classes. It is *generated procedurally* by the ``mnist1d`` package's ``make_dataset``
  with its default arguments (seed 42), which is offline; ``mnist1d.get_dataset`` is avoided on
  purpose because it first tries to download a pickle and then unpickles it.
* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, no download), split
  80/20 with a fixed seed; the fallback when ``mnist1d`` is not installed.
* ``cifar10`` / ``cifar100``: read from a directory the user points at, in the python-pickle
  format of https://www.cs.toronto.edu/~kriz/cifar.html (the same files torchvision downloads into
  ``cifar-10-batches-py/`` and ``cifar-100-python/``), with a restricted unpickler that cannot run
  code (see :class:`RestrictedUnpickler`).
"""

from __future__ import annotations

import functools
import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypedDict

import numpy as np

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "RestrictedUnpickler",
    "load_cifar",
    "load_dataset",
    "restricted_load",
]


class DataError(Exception):
    """A dataset cannot be read: missing directory or file, or a file in the wrong format."""


@dataclass
class Dataset:
    """A classification dataset held in memory.

    ``x_*`` keep their storage dtype (uint8 for CIFAR, to save memory); a batch is turned into
    float32 and standardized as ``(x / scale - mean) / std`` with the per-channel ``mean`` and
    ``std`` (channel axis 1) computed on the training set.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    scale: float = 1.0
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    #: CIFAR-style images (N, 3, 32, 32) that take random crops and flips when augmenting.
    is_image: bool = False

    def standardize(self, x: np.ndarray) -> np.ndarray:
        """``x`` as float32, ``(x / scale - mean) / std`` (the per-batch transform, in NumPy)."""
        x = x.astype(np.float32)
        if self.scale != 1.0:
            x = x / np.float32(self.scale)
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return x

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example (without the batch axis)."""
        return tuple(self.x_train.shape[1:])

    def subset(self, train_size: int | None, test_size: int | None) -> Dataset:
        """The first ``train_size`` / ``test_size`` examples (the files are already shuffled)."""
        train = slice(None) if train_size is None else slice(0, train_size)
        test = slice(None) if test_size is None else slice(0, test_size)
        return Dataset(
            name=self.name,
            x_train=self.x_train[train],
            y_train=self.y_train[train],
            x_test=self.x_test[test],
            y_test=self.y_test[test],
            num_classes=self.num_classes,
            class_names=self.class_names,
            scale=self.scale,
            mean=self.mean,
            std=self.std,
            is_image=self.is_image,
        )


# --------------------------------------------------------------------------- embedded datasets


def _standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = x_train.mean(), x_train.std()
    return (
        ((x_train - mean) / std).astype(np.float32),
        ((x_test - mean) / std).astype(np.float32),
    )


@functools.lru_cache(maxsize=1)
def load_mnist1d() -> Dataset:
    """MNIST-1D generated procedurally (offline, about one second), default arguments.

    Cached: the arrays are never modified (``subset`` makes views), so repeated comparisons in one
    process (tests, notebooks) generate it once.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise DataError(
            "the mnist1d dataset needs the 'mnist1d' package (pip install 'padam[compare]'); "
            "use --dataset digits for scikit-learn's bundled digits instead"
        ) from error
    # make_dataset seeds NumPy's and Python's global generators; keep the caller's state.
    numpy_state = np.random.get_state()
    import random

    python_state = random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    x_train, x_test = data["x"].astype(np.float32), data["x_test"].astype(np.float32)
    return Dataset(
        name="mnist1d",
        x_train=x_train,
        y_train=np.asarray(data["y"], dtype=np.int64),
        x_test=x_test,
        y_test=np.asarray(data["y_test"], dtype=np.int64),
        num_classes=10,
        class_names=[str(digit) for digit in range(10)],
    )


def load_digits() -> Dataset:
    """scikit-learn's 8x8 digits (bundled with scikit-learn), 80/20 split with seed 0."""
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise DataError(
            "the digits dataset needs scikit-learn (pip install scikit-learn)"
        ) from error
    bunch = sklearn_load_digits()
    x = bunch.data.astype(np.float64).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    split = int(0.8 * len(y))
    x_train, x_test = _standardize(x[:split], x[split:])
    return Dataset(
        name="digits",
        x_train=x_train,
        y_train=y[:split],
        x_test=x_test,
        y_test=y[split:],
        num_classes=10,
        class_names=[str(digit) for digit in range(10)],
    )


# --------------------------------------------------------------------------- CIFAR reader


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR pickle needs: what NumPy uses to pickle an ndarray.

    ``ndarray.__reduce__`` gives ``_reconstruct(ndarray, shape, dtype)`` plus the raw bytes, and a
    dtype pickles as ``dtype(...)``. NumPy 2 renamed ``numpy.core`` to ``numpy._core``: the
    official files (NumPy 1, Python 2) name the old module, files re-pickled today the new one.
    ``_frombuffer`` is what protocol-5 pickles of arrays use; like the others it only builds an
    array from bytes. Nothing here can call an arbitrary function or import a module (and object
    arrays are rejected after loading: a batch must be uint8).
    """
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {}
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = _checked_reconstruct(
            multiarray._reconstruct
        )
        # Private in NumPy (no stub), but what pickled arrays name: the reader must allow it.
        frombuffer = numeric._frombuffer  # type: ignore[attr-defined]
        allowed[(f"{module}.numeric", "_frombuffer")] = frombuffer
        allowed[(f"{module}.multiarray", "scalar")] = _numeric_scalar
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    # Python 3 writes bytes at protocols 0-2 as _codecs.encode(text, "latin1"), and empty bytes
    # as bytes(); only those exact calls are accepted (no general codec or constructor call).
    allowed[("_codecs", "encode")] = _latin1_encode
    allowed[("__builtin__", "bytes")] = allowed[("builtins", "bytes")] = _empty_bytes
    return allowed


def _checked_reconstruct(reconstruct: Any) -> Any:
    """NumPy's ``_reconstruct``, refusing the shapes NumPy never pickles: it always writes an
    empty placeholder (the real shape comes with the data, which ``__setstate__`` checks), so a
    large shape here is a tiny file asking for a huge allocation."""

    def checked(cls: Any, shape: Any, dtype: Any) -> Any:
        if cls is not np.ndarray:
            raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r}")
        extents = shape if isinstance(shape, tuple) else (shape,)
        if not all(isinstance(n, int) and 0 <= n <= 1 for n in extents):
            raise pickle.UnpicklingError(f"refusing an array placeholder of shape {shape!r}")
        return reconstruct(cls, shape, dtype)

    return checked


def _numeric_scalar(dtype: Any, data: Any = None) -> Any:
    """``numpy.core.multiarray.scalar`` for a number (labels pickled as NumPy integers)."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or not isinstance(data, bytes):
        raise pickle.UnpicklingError(f"refusing a NumPy scalar of dtype {dtype!r}")
    if len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("a NumPy scalar's bytes do not match its dtype")
    return np.frombuffer(data, dtype=dtype)[0]


def _empty_bytes(*args: object) -> bytes:
    """``bytes()``: how Python 3 pickles ``b""`` at protocols 0-2; nothing else is allowed."""
    if args:
        raise pickle.UnpicklingError("refusing bytes(...) with arguments")
    return b""


def _latin1_encode(text: object, encoding: object = None, errors: object = None) -> bytes:
    """``_codecs.encode`` restricted to what pickle uses it for: str -> bytes via latin-1."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors is not None:
        raise pickle.UnpicklingError("refusing _codecs.encode other than (str, 'latin1')")
    return text.encode("latin-1")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, strings, bytes, numbers and NumPy arrays.

    Every global a pickle asks for goes through :meth:`find_class`; anything other than the few
    NumPy array constructors (``os.system``, ``builtins.eval``, ...) raises
    ``pickle.UnpicklingError`` before it is called, so a malicious file cannot run code.
    """

    _allowed: Final = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: a CIFAR file only holds "
                "dicts, lists, strings, numbers and NumPy arrays"
            ) from None


def restricted_load(path: Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (Python 2 strings read as bytes)."""
    data = path.read_bytes()
    # encoding="bytes": the official files were written by Python 2, whose str keys become bytes.
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def _key(record: dict[Any, Any], name: str) -> Any:
    """``record[name]`` whether the pickle was written with str (Python 3) or bytes keys."""
    for key in (name, name.encode()):
        if key in record:
            return record[key]
    raise KeyError(name)


class _CifarLayout(TypedDict):
    """Where a CIFAR dataset's python-pickle files are and what their dictionaries call things."""

    subdirectory: str  # torchvision's folder for it
    train: tuple[str, ...]  # batch files
    test: tuple[str, ...]
    meta: str  # the file naming the classes
    labels: str  # the batches' key of the labels
    label_names: str  # the meta file's key of the class names
    num_classes: int


_CIFAR: Final[dict[str, _CifarLayout]] = {
    "cifar10": {
        "subdirectory": "cifar-10-batches-py",
        "train": tuple(f"data_batch_{index}" for index in range(1, 6)),
        "test": ("test_batch",),
        "meta": "batches.meta",
        "labels": "labels",
        "label_names": "label_names",
        "num_classes": 10,
    },
    "cifar100": {
        "subdirectory": "cifar-100-python",
        "train": ("train",),
        "test": ("test",),
        "meta": "meta",
        "labels": "fine_labels",
        "label_names": "fine_label_names",
        "num_classes": 100,
    },
}


def _cifar_root(name: str, data_dir: Path) -> Path:
    """The directory holding the batch files: ``data_dir`` or torchvision's subdirectory in it."""
    layout = _CIFAR[name]
    if not data_dir.exists():
        raise DataError(f"{name} data directory does not exist: {data_dir}")
    if not data_dir.is_dir():
        raise DataError(f"{name} data directory is not a directory: {data_dir}")
    for root in (data_dir, data_dir / layout["subdirectory"]):
        if all((root / file).is_file() for file in (*layout["train"], *layout["test"])):
            return root
    expected = ", ".join((*layout["train"], *layout["test"]))
    raise DataError(
        f"{name} data not found in {data_dir}: expected the python-pickle files {expected} "
        f"there or in {data_dir / layout['subdirectory']} (download and unpack "
        "https://www.cs.toronto.edu/~kriz/cifar.html, python version)"
    )


def _read_batch(path: Path, labels_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one CIFAR batch file."""
    try:
        record = restricted_load(path)
    except pickle.UnpicklingError as error:
        raise DataError(f"{path} is not a valid CIFAR batch: {error}") from error
    except Exception as error:  # truncated or not a pickle at all: many exception types
        raise DataError(
            f"{path} is not a valid CIFAR batch: not a readable pickle "
            f"({type(error).__name__}: {error})"
        ) from error
    if not isinstance(record, dict):
        raise DataError(f"{path} is not a CIFAR batch: it holds a {type(record).__name__}")
    try:
        images, labels = _key(record, "data"), _key(record, labels_key)
    except KeyError as error:
        raise DataError(f"{path} is not a CIFAR batch: no {error.args[0]!r} entry") from None
    # Only what a CIFAR file holds: an ndarray of images and a flat list (or array) of integer
    # labels. Converting anything else (e.g. a deeply nested list) could recurse or explode.
    if not isinstance(images, np.ndarray):
        raise DataError(f"{path}: 'data' must be a NumPy array, got {type(images).__name__}")
    if isinstance(labels, list):
        if not all(
            isinstance(label, (int, np.integer)) and not isinstance(label, (bool, np.bool_))
            for label in labels
        ):
            raise DataError(f"{path}: '{labels_key}' must be a flat list of integers")
        labels = np.asarray(labels, dtype=np.int64) if labels else np.zeros(0, np.int64)
    elif not isinstance(labels, np.ndarray):
        raise DataError(f"{path}: '{labels_key}' must be a list or an array of integers")
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{path}: 'data' must be uint8 of shape (N, 3072), got {images.dtype} {images.shape}"
        )
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: '{labels_key}' must hold {images.shape[0]} integer labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels must lie in 0..{num_classes - 1}")
    return images.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar(name: str, data_dir: str | Path) -> Dataset:
    """Read CIFAR-10 (``name="cifar10"``) or CIFAR-100 (fine labels) from ``data_dir``.

    ``data_dir`` holds the python-pickle files (``data_batch_1`` .. ``data_batch_5``,
    ``test_batch``, ``batches.meta`` for CIFAR-10; ``train``, ``test``, ``meta`` for CIFAR-100),
    directly or in torchvision's ``cifar-10-batches-py/`` / ``cifar-100-python/`` subdirectory.
    Raises :class:`DataError` naming the directory or file if anything is missing or malformed.
    """
    if name not in _CIFAR:
        raise DataError(f"unknown CIFAR dataset {name!r}; expected one of {sorted(_CIFAR)}")
    layout = _CIFAR[name]
    root = _cifar_root(name, Path(data_dir).expanduser())
    parts = {
        split: [_read_batch(root / file, layout["labels"], layout["num_classes"]) for file in files]
        for split, files in (("train", layout["train"]), ("test", layout["test"]))
    }
    x_train = np.concatenate([images for images, _ in parts["train"]])
    y_train = np.concatenate([labels for _, labels in parts["train"]])
    x_test = np.concatenate([images for images, _ in parts["test"]])
    y_test = np.concatenate([labels for _, labels in parts["test"]])
    class_names: list[str] = []
    meta_path = root / layout["meta"]
    if meta_path.is_file():  # optional: only used to name the classes in results.json
        try:
            names = _key(restricted_load(meta_path), layout["label_names"])
            class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        except Exception as error:
            raise DataError(f"{meta_path} is not a valid CIFAR meta file ({error!r})") from error
    # Per-channel statistics of the training images (in [0, 1]), as the usual CIFAR recipe.
    scaled = x_train.reshape(x_train.shape[0], 3, -1)
    mean = np.array([scaled[:, c].mean() for c in range(3)]) / 255.0
    std = np.array([scaled[:, c].std() for c in range(3)]) / 255.0
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=layout["num_classes"],
        class_names=class_names,
        scale=255.0,
        mean=mean.astype(np.float32).reshape(1, 3, 1, 1),
        std=np.maximum(std, 1e-8).astype(np.float32).reshape(1, 3, 1, 1),
        is_image=True,
    )


DATASETS: Final[dict[str, Callable[[Path | None], Dataset]]] = {
    "mnist1d": lambda data_dir: load_mnist1d(),
    "digits": lambda data_dir: load_digits(),
    "cifar10": lambda data_dir: load_cifar("cifar10", _require_dir("cifar10", data_dir)),
    "cifar100": lambda data_dir: load_cifar("cifar100", _require_dir("cifar100", data_dir)),
}


def _require_dir(name: str, data_dir: Path | None) -> Path:
    if data_dir is None:
        raise DataError(f"{name} is read from disk: give its directory with --data-dir")
    return data_dir


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """Load a dataset of :data:`DATASETS` by name."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name](None if data_dir is None else Path(data_dir))
