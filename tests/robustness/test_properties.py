"""The property-based robustness suite (issue 10): every public entry point, generated invalid,
boundary and extreme values. Each call either raises a clear error naming the argument or the
file, or returns a finite, correct result; after every rejected call, parameters and every
state array are bitwise what they were (``tests.robustness.snapshot.assert_unchanged_on_error``).

The Keras part runs per backend from ``tests/keras/test_keras_robustness.py``.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import padam_core
from tests.robustness.snapshot import assert_unchanged_on_error
from tests.robustness.strategies import (
    NAMES,
    SETTINGS,
    as_valid_float,
    gradient_scales,
    hyperparameter_values,
)

TORCH_NAMES = {"b1": "betas", "b2": "betas"}


def _expect(outcome, name, expected, check):
    """A rejection must name ``name``; an accepted value must be valid and pass ``check``."""
    if isinstance(outcome, Exception):
        assert isinstance(outcome, (ValueError, TypeError)), repr(outcome)
        assert name in str(outcome), f"{name!r} not named in {outcome!r}"
        assert expected is None, f"valid value refused: {outcome!r}"
        return
    assert expected is not None, f"invalid value accepted for {name}"
    check(outcome)


def _finite(*arrays):
    return all(np.isfinite(np.asarray(a, dtype=np.float64)).all() for a in arrays)


# ---- padam_core.padam_step and update -----------------------------------------------------------


@SETTINGS
@given(name=st.sampled_from(NAMES), value=hyperparameter_values)
def test_padam_step_and_update(name, value):
    param, grad = np.array([1.0, -2.0, 0.0]), np.array([0.5, 0.0, -3.0])
    zeros = [np.zeros(3) for _ in range(3)]
    expected = as_valid_float(value, name)
    reference = (
        padam_core.padam_step(param, grad, *zeros, 1, **{name: expected})
        if expected is not None
        else None
    )

    def check(result):
        assert _finite(*result)
        np.testing.assert_allclose(result.param, reference.param, rtol=1e-12)

    outcome = assert_unchanged_on_error(
        lambda: padam_core.padam_step(param, grad, *zeros, 1, **{name: value}), param, *zeros
    )
    _expect(outcome, name, expected, check)

    state = padam_core.init([param])
    outcome = assert_unchanged_on_error(
        lambda: padam_core.update([grad], state, [param], **{name: value}), param, state
    )
    _expect(outcome, name, expected,
            lambda r: np.testing.assert_allclose(r[0][0], reference.param, rtol=1e-12))  # fmt: skip


@SETTINGS
@given(
    shape=st.sampled_from([(3,), (1,), (5,), (3, 1), ()]),
    dtype=st.sampled_from(["float64", "float32", "int64", "bool", "complex128"]),
    scale=gradient_scales,
)
def test_padam_step_arrays(shape, dtype, scale):
    param = np.ones(3)
    with np.errstate(all="ignore"):
        grad = np.full(shape, scale).astype(dtype)
    zeros = [np.zeros(3) for _ in range(3)]
    outcome = assert_unchanged_on_error(
        lambda: padam_core.padam_step(param, grad, *zeros, 1), param, *zeros
    )
    if isinstance(outcome, Exception):
        assert "padam_step:" in str(outcome)
        assert shape != (3,) or dtype in ("int64", "bool", "complex128")
    else:
        assert shape == (3,) and dtype in ("float64", "float32")
        if math.isfinite(scale):
            assert _finite(outcome.param, outcome.exp_avg_sq)


# ---- padam_core.Padam, fused and pure -----------------------------------------------------------


@SETTINGS
@given(
    name=st.sampled_from(NAMES),
    value=hyperparameter_values,
    fused=st.sampled_from([None, False]),
)
def test_numpy_padam_constructor(name, value, fused):
    expected = as_valid_float(value, name)
    outcome = assert_unchanged_on_error(lambda: padam_core.Padam([np.ones(3)], fused=fused,
                                                                 **{name: value}))  # fmt: skip
    _expect(outcome, name, expected, lambda optimizer: None)


@SETTINGS
@given(
    scale=gradient_scales,
    shape=st.sampled_from([(4,), (3,), (4, 1)]),
    dtype=st.sampled_from(["float32", "float64"]),
    fused=st.sampled_from([None, False]),
    variant=st.sampled_from(padam_core.VARIANTS),
)
def test_numpy_padam_step(scale, shape, dtype, fused, variant):
    params = {"a": np.ones(4, np.float32), "b": np.full(2, -1.0, np.float32)}
    optimizer = padam_core.Padam(params, fused=fused, variant=variant)
    optimizer.step({"a": np.full(4, 0.1, np.float32), "b": np.full(2, 0.1, np.float32)})
    with np.errstate(all="ignore"):
        grads = {"a": np.full(2, 0.5, np.float32), "b": np.full(shape, scale).astype(dtype)}
    outcome = assert_unchanged_on_error(lambda: optimizer.step(grads), optimizer, params)
    if isinstance(outcome, Exception):
        assert "'b'" in str(outcome) or "'a'" in str(outcome)
    else:
        # Saturation is the pure kernel's (the fused CPU kernel gets it on its own branch).
        if fused is False and math.isfinite(scale):
            assert _finite(params["a"], params["b"])


@SETTINGS
@given(
    entry=st.sampled_from(["step", "exp_avg/0", "exp_avg_sq/0", "max_exp_avg_sq/0"]),
    value=st.one_of(
        st.sampled_from([math.nan, math.inf, -1.0, 2.5, 0.0, 7.0, 1e30, 3.4e38]),
        st.just("dtype"), st.just("shape"), st.just("bool"), st.just("structured"),
    ),
    fused=st.sampled_from([None, False]),
)  # fmt: skip
def test_numpy_padam_load_state_dict(entry, value, fused):
    params = [np.ones(3, np.float32)]
    optimizer = padam_core.Padam(params, fused=fused)
    optimizer.step([np.full(3, 0.5, np.float32)])
    flat = optimizer.state_dict()
    like = flat[entry]
    if value == "dtype":
        flat[entry] = like.astype(np.float64 if entry != "step" else np.float32)
    elif value == "shape":
        flat[entry] = np.zeros(4, like.dtype)
    elif value == "bool":
        flat[entry] = np.ones(like.shape, bool)
    elif value == "structured":
        flat[entry] = np.zeros(like.shape, dtype=[("x", like.dtype)])
    else:
        with np.errstate(all="ignore"):
            flat[entry] = np.full(like.shape, value).astype(like.dtype)
    given_arrays = {key: np.array(array) for key, array in flat.items()}
    outcome = assert_unchanged_on_error(lambda: optimizer.load_state_dict(flat), optimizer)
    if isinstance(outcome, Exception):
        assert entry in str(outcome) or "step" in str(outcome)
        return
    loaded = optimizer.state_dict()
    assert all(np.isfinite(array).all() for array in loaded.values())
    assert all(array.min() >= 0 for key, array in loaded.items() if "_sq" in key)
    optimizer.step([np.full(3, 0.5, np.float32)])
    for key, array in given_arrays.items():  # the caller's arrays were copied
        np.testing.assert_array_equal(flat[key], array)


@SETTINGS
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".npz", ".safetensors"]))
def test_numpy_padam_load_of_arbitrary_bytes(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("load") / f"state{suffix}"
    path.write_bytes(data)
    optimizer = padam_core.Padam([np.ones(3)], fused=False)
    outcome = assert_unchanged_on_error(lambda: optimizer.load(path), optimizer)
    assert isinstance(outcome, ValueError) and str(path) in str(outcome)


# ---- padam_torch.Padam: every implementation, and load_state_dict ---------------------------


@SETTINGS
@given(
    name=st.sampled_from(NAMES),
    value=hyperparameter_values,
    foreach=st.sampled_from([True, False]),
)
def test_torch_padam_hyperparameters(name, value, foreach):
    torch = pytest.importorskip("torch")
    from padam_torch import Padam

    expected = as_valid_float(value, name)
    shown = TORCH_NAMES.get(name, name)
    keyword = {"b1": "betas", "b2": "betas"}.get(name, name)
    argument = ((value, 0.999) if name == "b1" else (0.9, value)) if keyword == "betas" else value
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.0], dtype=torch.float64))
    outcome = assert_unchanged_on_error(
        lambda: Padam([weight], foreach=foreach, **{keyword: argument})
    )
    _expect(outcome, shown, expected, lambda optimizer: None)
    # The same value put into a live group: the step is refused before anything moves.
    optimizer = Padam([weight], foreach=foreach)
    weight.grad = torch.tensor([0.5, 0.0, -3.0], dtype=torch.float64)
    optimizer.step()
    group = optimizer.param_groups[0]
    if keyword == "betas":
        group["betas"] = argument
    else:
        group[name] = value
    outcome = assert_unchanged_on_error(optimizer.step, optimizer, weight)
    if isinstance(outcome, Exception):
        assert shown in str(outcome) and expected is None
    else:
        assert torch.isfinite(weight).all()


@SETTINGS
@given(
    scale=gradient_scales,
    foreach=st.sampled_from([True, False]),
    dtype=st.sampled_from(["float32", "float64", "bfloat16"]),
)
def test_torch_padam_extreme_gradients(scale, foreach, dtype):
    torch = pytest.importorskip("torch")
    from padam_torch import Padam

    weight = torch.nn.Parameter(torch.ones(3, dtype=getattr(torch, dtype)))
    optimizer = Padam([weight], foreach=foreach, weight_decay=1.0)
    for _ in range(2):
        weight.grad = torch.full((3,), scale, dtype=weight.dtype)
        optimizer.step()
    if math.isfinite(scale):
        assert torch.isfinite(weight).all()
        state = optimizer.state[weight]
        assert all(torch.isfinite(state[k]).all() for k in ("exp_avg", "exp_avg_sq"))
        again = Padam([weight], foreach=foreach, weight_decay=1.0)
        again.load_state_dict(optimizer.state_dict())  # every reachable state loads


@SETTINGS
@given(
    key=st.sampled_from(["step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
    value=st.sampled_from([math.nan, -math.inf, -1.0, 2.5, 0.0, 3.0, True, "x", None, 1e30]),
    as_tensor=st.booleans(),
    foreach=st.sampled_from([True, False]),
)
def test_torch_padam_load_state_dict(key, value, as_tensor, foreach):
    torch = pytest.importorskip("torch")
    from padam_torch import Padam

    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = Padam([weight], foreach=foreach)
    weight.grad = torch.ones(3)
    optimizer.step()
    saved = optimizer.state_dict()
    state = {k: (v.clone() if isinstance(v, torch.Tensor) else v)
             for k, v in saved["state"][0].items()}  # fmt: skip
    if isinstance(value, (float, bool)) and as_tensor:
        state[key] = (torch.tensor(float(value)) if key == "step"
                      else torch.full((3,), float(value)))  # fmt: skip
    else:
        state[key] = value
    saved = {"state": {0: state}, "param_groups": saved["param_groups"]}
    outcome = assert_unchanged_on_error(lambda: optimizer.load_state_dict(saved), optimizer,
                                        weight)  # fmt: skip
    if isinstance(outcome, Exception):
        assert isinstance(outcome, ValueError) and key in str(outcome)
        return
    optimizer.step()
    assert torch.isfinite(weight).all()


# ---- padam_jax: transforms and checkpoint functions ----------------------------------------------


@SETTINGS
@given(name=st.sampled_from(NAMES), value=hyperparameter_values)
def test_jax_transforms(name, value):
    pytest.importorskip("jax")
    import jax.numpy as jnp

    from padam_jax import padam, scale_by_padam

    expected = as_valid_float(value, name)
    jax_name = {"lr": "learning_rate"}.get(name, name)
    for factory in (padam, scale_by_padam):
        if factory is scale_by_padam and name in ("lr", "weight_decay"):
            continue
        outcome = assert_unchanged_on_error(lambda f=factory: f(**{jax_name: value}))
        if isinstance(outcome, Exception):
            assert jax_name in str(outcome) and expected is None, repr(outcome)
            continue
        assert expected is not None, f"accepted {jax_name}={value!r}"
        params = {"w": jnp.ones(3)}
        state = outcome.init(params)
        updates, _ = outcome.update({"w": jnp.full(3, 0.5)}, state, params)
        assert _finite(updates["w"])


@SETTINGS
@given(
    entry=st.sampled_from(["count", "mu", "nu", "nu_max", "extra", "missing", "types"]),
    value=st.sampled_from([math.nan, math.inf, -1.0, 0.0, 2.0, "structured", "int"]),
)
def test_jax_state_from_arrays(entry, value):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from padam_jax import padam, state_from_arrays, state_to_arrays

    optimizer = padam(0.1)
    params = {"w": jnp.ones(3, jnp.float32)}
    state = optimizer.init(params)
    _, state = optimizer.update({"w": jnp.ones(3, jnp.float32)}, state, params)
    arrays = state_to_arrays(state)
    key = "[1].count" if entry == "count" else f"[1].{entry}['w']"
    if entry == "extra":
        arrays["[9].nothing"] = np.zeros(1)
    elif entry == "missing":
        del arrays["[1].nu['w']"]
    elif entry == "types":
        arrays["__state_types__"] = np.frombuffer(b'["Other"]', np.uint8)
    elif value == "structured":
        arrays[key] = np.zeros(arrays[key].shape, dtype=[("x", "<f4")])
    elif value == "int":
        arrays[key] = arrays[key].astype(np.int64)
    else:
        with np.errstate(all="ignore"):
            arrays[key] = np.full(arrays[key].shape, value).astype(arrays[key].dtype)
    outcome = assert_unchanged_on_error(
        lambda: state_from_arrays(arrays, like=jax.eval_shape(optimizer.init, params)), arrays
    )
    if isinstance(outcome, Exception):
        assert isinstance(outcome, ValueError)
        return
    assert entry not in ("extra", "missing", "types")
    updates, _ = optimizer.update({"w": jnp.ones(3, jnp.float32)}, outcome, params)
    assert _finite(updates["w"])


# ---- padam compare: flags, TOML, CIFAR reader ---------------------------------------------------

FLAG_VALUES = st.one_of(
    st.sampled_from(["0", "-1", "inf", "nan", "1e300", "1e-300", str(10**12), "0.5", "1/8",
                     "x", "", "2**70", "3.4e39"]),
    st.text(alphabet="0123456789.-e", max_size=6),
)  # fmt: skip
FLAGS = ["--epochs", "--batch-size", "--lr-decay", "--weight-decay", "--partials", "--seeds",
         "--target-loss", "--train-size", "--threads", "--milestones"]  # fmt: skip


@SETTINGS
@given(flag=st.sampled_from(FLAGS), value=FLAG_VALUES)
def test_compare_flags_and_toml(flag, value, tmp_path_factory):
    from padam_compare.cli import main
    from padam_compare.config import ConfigError, build_config

    output = tmp_path_factory.mktemp("out")
    code = main(["compare", flag, value, "--output-dir", str(output), "--print-config"])
    assert code in (0, 2)
    name = flag.removeprefix("--").replace("-", "_")
    try:
        number = float(value)
    except ValueError:
        return
    toml_value = [int(number)] if name in ("seeds", "milestones", "partials") else number
    if name in ("epochs", "batch_size", "train_size", "threads") or name in ("seeds", "milestones"):
        if not (math.isfinite(number) and number.is_integer()):
            return
        toml_value = [int(number)] if name in ("seeds", "milestones") else int(number)
    try:
        build_config(file_values={name: toml_value})
    except ConfigError as error:
        assert name in str(error) or name.rstrip("s") in str(error)
        assert code == 2 or toml_value != number  # TOML is no looser than the flags
    else:
        config = build_config(file_values={name: toml_value})
        values = getattr(config, name)
        assert all(math.isfinite(float(v)) for v in (values if isinstance(values, list)
                                                       else [values]))  # fmt: skip


@SETTINGS
@given(
    position=st.integers(0, 10_000),
    replacement=st.binary(min_size=1, max_size=8),
    truncate=st.booleans(),
)
def test_cifar_reader_on_damaged_files(position, replacement, truncate, tmp_path_factory):
    from padam_compare.data import DataError, load_cifar
    from tests.compare.helpers import make_cifar10

    directory = tmp_path_factory.mktemp("cifar")
    make_cifar10(directory, per_batch=1, test=1)
    path = directory / "data_batch_3"
    data = bytearray(path.read_bytes())
    position %= len(data)
    data[position : position + len(replacement)] = replacement
    path.write_bytes(bytes(data[:position]) if truncate else bytes(data))
    try:
        dataset = load_cifar("cifar10", directory)
    except DataError as error:
        assert "data_batch_3" in str(error)
        return
    assert dataset.x_train.dtype == np.uint8 and dataset.y_train.max() < 10


def test_cifar_reader_refuses_every_other_global(tmp_path):
    from padam_compare.data import DataError, load_cifar
    from tests.compare.helpers import make_cifar10

    make_cifar10(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": print}, protocol=2))
    with pytest.raises(
        DataError, match=r"test_batch.*refusing to load global (__builtin__|builtins)\.print"
    ):
        load_cifar("cifar10", tmp_path)
