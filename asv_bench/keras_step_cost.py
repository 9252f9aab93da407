"""The optimizer part of a Keras fit step: padam_keras.Padam against Keras's Adam(amsgrad=True).

Not a test (no timing assertions in tests) and not an asv benchmark (asv cannot switch Keras's
backend, which is fixed once per process): a script that measures one backend per process and
prints ONE JSON line, so a table script can run it as a subprocess per backend::

    PYTHONPATH=.:adapters python asv_bench/keras_step_cost.py --backend tensorflow   # jax, torch

(``--backend`` defaults to ``KERAS_BACKEND``.) Three copies of the same MLP (1.06 M float32
parameters: 512 -> 1024 -> 512 -> 10, batch 64) are compiled with SGD, Adam(amsgrad=True) and
Padam (p = 1/8 unless ``--partial``) and trained with ``model.fit`` as a user would (Keras's
default ``jit_compile``: ``jax.jit`` on JAX, eager on torch, and on TensorFlow XLA only where
there is an accelerator: a CPU-only TensorFlow runs ``fit`` as a plain ``tf.function`` graph).
After a warm-up fit each, the three are fitted in interleaved rounds (a shuffled order per round) of
``--steps`` batches; a callback times every batch (the interval between two ``on_train_batch_end``
calls, which wait for the step's loss), the first batch of each fit is dropped (it holds the
fit's set-up), and the optimizer part of a step is its median time minus SGD's median time::

    ratio = (Padam - SGD) / (Adam - SGD)

``--threads`` (default 1) pins every framework's thread pools (and numba's) to that many
threads before anything is imported, because on a shared machine oversubscribed thread pools
make the timings meaningless; ``--threads 0`` leaves the frameworks' defaults. ``--clock cpu``
(the default) times with the process's CPU time, which other processes' load does not inflate;
``--clock wall`` uses ``time.perf_counter``.

``--mode apply`` times ``optimizer.apply`` calls alone on the same variables instead (jitted
``stateless_apply`` on JAX, ``tf.function`` on TensorFlow with the ``jit_compile`` that ``fit``
would use, eager on torch), with no SGD subtraction: a less noisy view of the cost on TensorFlow
and torch. Not on JAX: ``fit`` donates the optimizer state to its jitted step and this mode's
``jax.jit(stateless_apply)`` does not, so the in-place while loops that padam_keras lowers its
traced-p dispatch to (:mod:`padam_keras._xla`) first copy their state here, which ``fit`` never
pays; ``--mode fit`` is the figure that counts there. Only the ratio means anything on a shared
machine; the times are printed so that noise shows.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

LAYERS = (512, 1024, 512, 10)
BATCH = 64
CLOCK = time.process_time


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    parser.add_argument("--mode", choices=("fit", "apply"), default="fit")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=20, help="batches per timed fit")
    parser.add_argument("--partial", type=float, default=0.125)
    parser.add_argument("--threads", type=int, default=1, help="threads per pool (0: default)")
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu: the process's CPU time (all its threads), immune to other processes' load",
    )
    return parser.parse_args()


def _pin_threads(threads: int) -> None:
    """Thread pools of every framework, set before any of them is imported."""
    if not threads:
        return
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
    if threads == 1:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()


def main() -> None:
    args = _parse()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _pin_threads(args.threads)
    import keras
    import numpy as np

    from padam_keras import Padam

    if keras.backend.backend() != args.backend:
        sys.exit(f"keras was already imported with backend {keras.backend.backend()}")
    if args.threads and args.backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(args.threads)
    if args.threads and args.backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        except RuntimeError:  # already initialized: the environment variables above hold
            pass

    makers: dict[str, Callable[[], Any]] = {
        "sgd": lambda: keras.optimizers.SGD(learning_rate=1e-3),
        "adam": lambda: keras.optimizers.Adam(learning_rate=1e-3, amsgrad=True),
        "padam": lambda: Padam(learning_rate=1e-3, partial=args.partial),
    }
    if args.mode == "apply":
        makers.pop("sgd")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * args.steps, LAYERS[0])).astype("float32")
    y = rng.integers(0, LAYERS[-1], size=BATCH * args.steps)
    runner = _fit_runner if args.mode == "fit" else _apply_runner
    runners = {name: runner(keras, make, x, y) for name, make in makers.items()}
    for run in runners.values():  # compile / first-call costs stay out of the timings
        run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    for _ in range(args.repeats):
        random.shuffle(order)
        for name in order:
            times[name].extend(runners[name]())
    median = {name: statistics.median(values) for name, values in times.items()}
    base = median.get("sgd", 0.0)
    adam, padam = median["adam"] - base, median["padam"] - base
    record = {
        "backend": args.backend,
        "mode": args.mode,
        "partial": args.partial,
        "ratio": round(padam / adam, 3) if adam > 0 else None,
        "padam_optimizer_ms": round(padam, 3),
        "adam_optimizer_ms": round(adam, 3),
        **{f"{name}_step_ms": round(value, 3) for name, value in median.items()},
        **{f"{name}_step_ms_iqr": round(_iqr(values), 3) for name, values in times.items()},
        "parameters": _parameter_count(),
        "batch": BATCH,
        "steps": args.steps,
        "repeats": args.repeats,
        "threads": args.threads,
        "clock": args.clock,
        "keras": keras.__version__,
    }
    print(json.dumps(record))


def _parameter_count() -> int:
    return sum((a + 1) * b for a, b in itertools.pairwise(LAYERS))


def _iqr(values: list[float]) -> float:
    quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [0.0, 0.0, 0.0]
    return quartiles[2] - quartiles[0]


def _model(keras: Any) -> Any:
    keras.utils.set_random_seed(0)
    layers = [keras.Input((LAYERS[0],))]
    layers += [keras.layers.Dense(units, activation="relu") for units in LAYERS[1:-1]]
    layers.append(keras.layers.Dense(LAYERS[-1]))
    return keras.Sequential(layers)


def _fit_runner(keras: Any, make: Callable[[], Any], x: Any, y: Any) -> Callable[[], list[float]]:
    """One ``model.fit`` epoch over ``x``; returns the milliseconds of each batch but the first."""
    model = _model(keras)
    model.compile(
        optimizer=make(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )

    class BatchTimes(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            self.stamps: list[float] = []

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            float(logs["loss"])  # wait for the step (JAX and torch dispatch asynchronously)
            self.stamps.append(CLOCK())

    timer = BatchTimes()

    def run() -> list[float]:
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False, callbacks=[timer])
        return [(b - a) * 1e3 for a, b in itertools.pairwise(timer.stamps)]

    return run


def _apply_runner(keras: Any, make: Callable[[], Any], x: Any, y: Any) -> Callable[[], list[float]]:
    """``optimizer.apply`` on the MLP's variables with fixed gradients, one timing per call."""
    import numpy as np

    steps = len(x) // BATCH
    model = _model(keras)
    variables = model.trainable_variables
    rng = np.random.default_rng(1)
    grads = [
        keras.ops.convert_to_tensor((1e-2 * rng.normal(size=v.shape)).astype("float32"))
        for v in variables
    ]
    optimizer = make()
    optimizer.build(variables)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        apply = jax.jit(optimizer.stateless_apply)
        state = {
            "opt": [v.value for v in optimizer.variables],
            "vars": [v.value for v in variables],
        }

        def step() -> None:
            state["vars"], state["opt"] = apply(state["opt"], grads, state["vars"])
            jax.block_until_ready(state["vars"])

    else:
        if backend == "tensorflow":
            import tensorflow as tf

            jit = bool(model.jit_compile)  # Keras's "auto": no XLA on a CPU-only TensorFlow
            compiled = tf.function(lambda g: optimizer.apply(g, variables), jit_compile=jit)
        else:

            def compiled(g: Any) -> None:
                optimizer.apply(g, variables)

        def step() -> None:
            compiled(grads)
            keras.ops.convert_to_numpy(variables[-1])  # wait for the step

    def run() -> list[float]:
        times = []
        for _ in range(steps):
            start = CLOCK()
            step()
            times.append((CLOCK() - start) * 1e3)
        return times

    return run


if __name__ == "__main__":
    main()
