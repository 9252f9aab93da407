"""Regression tests for issue 10, written from its description: padam_core's causes."""

from __future__ import annotations

import math

import numpy as np
import pytest

import padam_core
from tests.robustness.snapshot import assert_unchanged_on_error

# ---- cause 2: only Python numbers were checked ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("lr", np.array(-1.0)),
        ("lr", np.float32(-0.5)),
        ("partial", np.array(0.7)),
        ("eps", "nan"),
        ("eps", "1e-8"),
        ("lr", None),
        ("b1", [0.9]),
        ("weight_decay", 1j),
        ("b2", np.array([0.9, 0.99])),
        ("partial", np.bool_(True)),
        ("lr", np.array(0.1 + 0j)),
    ],
)
def test_cause2_concrete_and_non_numeric_values_are_rejected_everywhere(name, value):
    params = [np.ones(3)]
    grads = [np.full(3, 0.5)]
    state = padam_core.init(params)
    with pytest.raises(ValueError, match=f"Invalid {name} value"):
        padam_core.update(grads, state, params, **{name: value})
    optimizer = padam_core.Padam([np.ones(3)], fused=False)
    with pytest.raises(ValueError, match=f"Invalid {name} value"):
        padam_core.Padam([np.ones(3)], **{name: value})
    assert_unchanged_on_error(lambda: optimizer.step([np.ones(3)]) or None, optimizer)


def test_cause2_concrete_zero_d_arrays_in_range_are_accepted():
    params = [np.ones(3)]
    state = padam_core.init(params)
    new, _ = padam_core.update(
        [np.full(3, 0.5)], state, params, lr=np.array(0.1), partial=np.array(0.25)
    )
    assert np.isfinite(new[0]).all() and (new[0] < 1).all()


def test_cause2_traced_values_skip_only_the_range_check():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    params = [jnp.ones(3)]
    state = padam_core.init(params)

    @jax.jit
    def step(lr):
        return padam_core.update([jnp.full(3, 0.5)], state, params, lr=lr)[0][0]

    assert bool(jnp.all(step(jnp.asarray(0.1)) < 1))
    with pytest.raises(ValueError, match="Invalid lr value"):  # concrete: range-checked
        padam_core.update([jnp.full(3, 0.5)], state, params, lr=jnp.asarray(-0.1))
    with pytest.raises(ValueError, match="Invalid lr value"):  # the dtype is checked even so
        jax.jit(lambda lr: padam_core.update([jnp.ones(3)], state, params, lr=lr))(
            jnp.asarray(True)
        )


# ---- cause 7: eps = 0 -----------------------------------------------------------------------


def test_cause7_eps_zero_is_rejected():
    with pytest.raises(ValueError, match=r"Invalid eps value: 0\.0 \(expected 0 < eps < inf\)"):
        padam_core.validate_hyperparameters(eps=0.0)
    with pytest.raises(ValueError, match="Invalid eps value"):
        padam_core.Padam([np.ones(2)], eps=0)
    state = padam_core.init([np.ones(2)])
    with pytest.raises(ValueError, match="Invalid eps value"):
        padam_core.update([np.zeros(2)], state, [np.ones(2)], eps=np.float64(0))


def test_cause7_smallest_eps_gives_no_nan_for_a_zero_gradient():
    state = padam_core.init([np.ones(2)])
    new, _ = padam_core.update([np.zeros(2)], state, [np.ones(2)], eps=math.ulp(0.0))
    np.testing.assert_array_equal(new[0], np.ones(2))


# ---- cause 6: a large finite gradient -------------------------------------------------------

SATURATING = [
    pytest.param(1.0, 1e30, 0.0, id="huge-gradient"),
    pytest.param(1.0, -3e38, 0.0, id="largest-gradient"),
    pytest.param(3e38, 1.0, 1.0, id="coupled-decay-overflow"),
]


@pytest.mark.parametrize("variant", padam_core.VARIANTS)
@pytest.mark.parametrize(("theta", "grad", "weight_decay"), SATURATING)
def test_cause6_finite_gradients_give_finite_state_that_saves_and_loads(
    tmp_path, variant, theta, grad, weight_decay
):
    params = [np.array([theta, 1.0], np.float32)]
    optimizer = padam_core.Padam(params, lr=0.1, weight_decay=weight_decay, variant=variant,
                                 fused=False)  # fmt: skip
    for _ in range(3):
        optimizer.step([np.array([grad, 0.5], np.float32)])
    assert np.isfinite(params[0]).all()
    flat = optimizer.state_dict()
    assert all(np.isfinite(value).all() for value in flat.values())
    # The kernel saturates at finfo(float32).max: v_hat is exactly that, not inf.
    assert flat["max_exp_avg_sq/0"][0] == np.finfo(np.float32).max
    optimizer.save(tmp_path / "state.npz")
    again = padam_core.Padam([params[0].copy()], variant=variant, fused=False)
    again.load(tmp_path / "state.npz")
    assert again.count == 3


@pytest.mark.parametrize("variant", padam_core.VARIANTS)
@pytest.mark.parametrize(("theta", "grad", "weight_decay"), SATURATING)
def test_cause6_the_kernel_and_both_torch_paths_agree(variant, theta, grad, weight_decay):
    torch = pytest.importorskip("torch")
    from padam_torch import Padam

    results = []
    for foreach in (True, False):
        w = torch.nn.Parameter(torch.tensor([theta, 1.0], dtype=torch.float32))
        optimizer = Padam([w], lr=0.1, weight_decay=weight_decay, variant=variant,
                          foreach=foreach)  # fmt: skip
        for _ in range(3):
            w.grad = torch.tensor([grad, 0.5], dtype=torch.float32)
            optimizer.step()
        state = optimizer.state[w]
        results.append([w.detach().numpy().copy()]
                       + [state[k].numpy().copy() for k in ("exp_avg", "exp_avg_sq",
                                                            "max_exp_avg_sq")])  # fmt: skip
    params = [np.array([theta, 1.0], np.float32)]
    state = padam_core.init(params)
    with np.errstate(over="ignore"):
        for _ in range(3):
            params, state = padam_core.update([np.array([grad, 0.5], np.float32)], state, params,
                                              lr=0.1, weight_decay=weight_decay,
                                              variant=variant)  # fmt: skip
    results.append([params[0], state.exp_avg[0], state.exp_avg_sq[0], state.max_exp_avg_sq[0]])
    for result in results:
        assert all(np.isfinite(array).all() for array in result)
        for array, expected in zip(result, results[-1], strict=True):
            np.testing.assert_allclose(array, expected, rtol=2e-6)


# ---- cause 3: padam_core.Padam.step is all-or-nothing ---------------------------------------


@pytest.mark.parametrize("fused", [None, False])
def test_cause3_a_read_only_second_array_changes_nothing(fused):
    first, second = np.ones(3), np.ones(2)
    second.flags.writeable = False
    optimizer = padam_core.Padam([first, second], fused=fused)
    error = assert_unchanged_on_error(
        lambda: optimizer.step([np.full(3, 0.5), np.full(2, 0.5)]), optimizer, first
    )
    assert isinstance(error, ValueError) and "'1' is read-only" in str(error)
    assert optimizer.count == 0


@pytest.mark.parametrize("fused", [None, False])
def test_cause3_a_hyperparameter_that_fails_late_changes_nothing(fused):
    optimizer = padam_core.Padam({"a": np.ones(3), "b": np.ones(2)}, fused=fused)
    optimizer.hyperparameters["eps"] = "1e-8"  # a public dict, changed after construction
    assert_unchanged_on_error(
        lambda: optimizer.step({"a": np.ones(3), "b": np.ones(2)}), optimizer, match="eps"
    )
    optimizer.hyperparameters["eps"] = 1e-8
    optimizer.lr = lambda step: -1.0  # a schedule gone wrong
    assert_unchanged_on_error(
        lambda: optimizer.step({"a": np.ones(3), "b": np.ones(2)}), optimizer, match="lr"
    )
    assert optimizer.count == 0 and not optimizer.state.exp_avg["a"].any()


# ---- cause 4: load_state_dict keeps the caller's arrays -------------------------------------


@pytest.mark.parametrize("fused", [None, False])
def test_cause4_a_loaded_snapshot_is_never_written(fused):
    params = [np.ones(4, np.float32)]
    optimizer = padam_core.Padam(params, fused=fused)
    optimizer.step([np.full(4, 0.5, np.float32)])
    snapshot = optimizer.state_dict()
    kept = {key: value.copy() for key, value in snapshot.items()}
    optimizer.load_state_dict(snapshot)
    optimizer.step([np.full(4, 0.25, np.float32)])
    for key, value in kept.items():
        np.testing.assert_array_equal(snapshot[key], value)


# ---- cause 9: arrays --------------------------------------------------------------------------


def test_cause9_no_broadcasting_of_a_gradient_into_a_parameter():
    state = padam_core.init([np.ones(1)])
    with pytest.raises(ValueError, match=r"grad has shape \(5,\), param has \(1,\)"):
        padam_core.update([np.ones(5)], state, [np.ones(1)])
    with pytest.raises(ValueError, match="no broadcasting"):
        padam_core.padam_step(np.ones(1), np.ones(5), np.zeros(1), np.zeros(1), np.zeros(1), 1)
    with pytest.raises(ValueError, match="exp_avg has shape"):
        padam_core.padam_step(np.ones(3), np.ones(3), np.zeros(1), np.zeros(3), np.zeros(3), 1)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_, np.uint8])
def test_cause9_integer_and_bool_parameters_are_rejected(dtype):
    param = np.array([10, 20]).astype(dtype)
    with pytest.raises(ValueError, match="floating dtype"):
        padam_core.Padam([param])
    state = padam_core.PadamState(0, [np.zeros(2)], [np.zeros(2)], [np.zeros(2)])
    with pytest.raises(ValueError, match="floating dtype"):
        padam_core.update([np.ones(2)], state, [param])
    np.testing.assert_array_equal(param, np.array([10, 20]).astype(dtype))


def test_cause9_the_same_array_registered_twice_is_rejected():
    weight = np.ones(3)
    with pytest.raises(ValueError, match="same array"):
        padam_core.Padam([weight, weight])
    with pytest.raises(ValueError, match="same array"):
        padam_core.Padam({"a": weight, "b": weight[...]})
    padam_core.Padam([weight[:2], weight[1:]])  # distinct views are distinct parameters


# ---- cause 10: files ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_cause10_save_never_follows_a_planted_symlink_and_leaves_no_temporary(tmp_path, suffix):
    pytest.importorskip("safetensors")
    optimizer = padam_core.Padam([np.ones(3)], fused=False)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / f"state{suffix}"
    (tmp_path / f"state{suffix}.tmp").symlink_to(victim)  # the old fixed temporary name
    optimizer.save(target)
    assert victim.read_bytes() == b"precious"
    again = padam_core.Padam([np.ones(3)], fused=False)
    again.load(target)
    leftovers = {p.name for p in tmp_path.iterdir()} - {"victim", target.name, f"state{suffix}.tmp"}
    assert not leftovers


def test_cause10_a_failing_save_removes_its_temporary_file(tmp_path):
    from padam_core.checkpoint import save_arrays

    with pytest.raises(ValueError, match="pickle"):  # never written with pickle
        save_arrays(tmp_path / "state.npz", {"x": np.array([object()])}, {})
    assert list(tmp_path.iterdir()) == []


def test_cause10_concurrent_saves_do_not_collide(tmp_path):
    import threading

    optimizer = padam_core.Padam([np.ones(1000)], fused=False)
    errors = []

    def save():
        try:
            for _ in range(10):
                optimizer.save(tmp_path / "state.npz")
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=save) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert [p.name for p in tmp_path.iterdir()] == ["state.npz"]


def test_cause10_load_checks_sizes_before_inflating(tmp_path):
    import zipfile

    bomb = tmp_path / "bomb.npz"
    header = b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("step.npy", header + b"\x00" * (200 << 20))  # 200 MiB of zeros
    assert bomb.stat().st_size < 1 << 20
    optimizer = padam_core.Padam([np.ones(3)], fused=False)
    error = assert_unchanged_on_error(lambda: optimizer.load(bomb), optimizer)
    assert isinstance(error, ValueError) and "bomb.npz" in str(error)
    assert "inflates to" in str(error)
