"""The numba fused multi-tensor path against the pure kernel it must match."""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import padam_core
from padam_core import fused_cpu
from padam_core.fused_cpu import _loop

pytestmark = pytest.mark.skipif(not fused_cpu.available(), reason="numba is not installed")

COMBINATIONS = list(
    itertools.product(
        padam_core.VARIANTS,
        (True, False),  # amsgrad
        ((0.0, False), (0.01, False), (0.01, True)),  # weight decay, decoupled
        (False, True),  # maximize
    )
)
# Mixed sizes in one call: empty, 0-d, small, one spanning several chunks.
SHAPES = [(8, 9), (0,), (), (3, 0, 2), (1,), (fused_cpu.CHUNK * 2 + 5,), (17,)]


def _hyperparameters(partial, variant, amsgrad, weight_decay, decoupled, maximize):
    return dict(
        lr=0.1, b1=0.9, b2=0.999, eps=1e-8, partial=partial, weight_decay=weight_decay,
        decoupled_weight_decay=decoupled, amsgrad=amsgrad, maximize=maximize, variant=variant,
    )  # fmt: skip


def _run(dtype, partial, combination, shapes=SHAPES, steps=12, grad_dtype=None):
    """(fused, pure) lists of [param, m, v, v_hat] per array after ``steps`` steps."""
    variant, amsgrad, (weight_decay, decoupled), maximize = combination
    hyperparameters = _hyperparameters(partial, variant, amsgrad, weight_decay, decoupled, maximize)
    rng = np.random.default_rng(0)
    params = [np.asarray(rng.normal(size=shape)).astype(dtype) for shape in shapes]
    pure, fused = [], []
    for param in params:
        state = padam_core.init(param, amsgrad=amsgrad)
        moments = [state.exp_avg, state.exp_avg_sq, state.max_exp_avg_sq]
        pure.append([param.copy(), *moments])
        fused.append([param.copy()] + [a.copy() if a is not None else None for a in moments])
    for t in range(1, steps + 1):
        scale = 10.0 if t == 1 else 1.0  # a large first gradient separates torch from optax
        grads = [np.asarray(rng.normal(size=p.shape) * scale).astype(dtype) for p in params]
        for k, grad in enumerate(grads):
            pure[k] = list(
                padam_core.padam_step(pure[k][0], grad, *pure[k][1:], t, **hyperparameters)
            )
        columns = [list(column) for column in zip(*fused, strict=True)]
        fused_cpu.multi_tensor_step(
            columns[0], grads, columns[1], columns[2], columns[3] if amsgrad else None, t,
            **hyperparameters,
        )  # fmt: skip
    return fused, pure


def _assert_close(fused, pure, general_power: bool) -> None:
    for ours_row, reference_row in zip(fused, pure, strict=True):
        for ours, reference in zip(ours_row, reference_row, strict=True):
            if reference is None:
                continue
            assert ours.shape == reference.shape and ours.dtype == reference.dtype
            if general_power and reference.size:
                # exp2/log2 polynomials against NumPy's pow: a few ulps.
                tolerance = 1e-5 if reference.dtype == np.float32 else 1e-13
                scale = np.max(np.abs(reference))
                assert np.max(np.abs(ours - reference)) <= tolerance * scale
            else:  # the same operations in the same order: the same bits
                np.testing.assert_array_equal(ours, reference)


# One loop is compiled per (variant, power, amsgrad, dtype); the disk cache keeps reruns fast.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_variant_and_flag_matches_pure_kernel(dtype):
    for combination in COMBINATIONS:
        _assert_close(*_run(dtype, 0.125, combination), general_power=False)


@pytest.mark.parametrize("partial", [0.0, 0.0625, 0.25, 0.5, 0.3, 0.01])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_power_matches_pure_kernel(dtype, partial):
    for variant in padam_core.VARIANTS:
        fused, pure = _run(dtype, partial, (variant, True, (0.01, False), False))
        _assert_close(fused, pure, general_power=fused_cpu.power_mode(partial) < 0)


def _ulps_apart(a: np.ndarray, b: np.ndarray) -> int:
    """The largest distance in representable steps (16-bit floats, as their bits)."""
    ia, ib = (x.view(np.int16).astype(np.int64) for x in (a, b))
    ia, ib = (np.where(x < 0, -(x & 0x7FFF), x) for x in (ia, ib))
    return int(np.max(np.abs(ia - ib), initial=0))


def _bfloat16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    return ml_dtypes.bfloat16


@pytest.mark.parametrize("kind", ["float16", "bfloat16", "bfloat16-bits"])
@pytest.mark.parametrize("variant", padam_core.VARIANTS)
def test_16_bit_parameters_equal_float32_rounded_once(kind, variant):
    dtype = np.float16 if kind == "float16" else _bfloat16()
    for amsgrad, (weight_decay, decoupled), maximize in itertools.product(
        (True, False), ((0.0, False), (0.01, False), (0.01, True)), (False, True)
    ):
        hyperparameters = _hyperparameters(
            0.125, variant, amsgrad, weight_decay, decoupled, maximize
        )
        rng = np.random.default_rng(2)
        params = [np.asarray(rng.normal(size=s)).astype(dtype) for s in SHAPES]
        grads = [np.asarray(rng.normal(size=s)).astype(dtype) for s in SHAPES]
        states = [padam_core.init(p, amsgrad=amsgrad) for p in params]
        # One step from non-zero state: the float32 state round-trips exactly.
        for state in states:
            for moment in (state.exp_avg, state.exp_avg_sq, state.max_exp_avg_sq):
                if moment is not None:
                    moment[...] = np.abs(rng.normal(size=moment.shape)) * 0.01
        pure = [
            padam_core.padam_step(p, g, s.exp_avg, s.exp_avg_sq, s.max_exp_avg_sq, 3,
                                  **hyperparameters)
            for p, g, s in zip(params, grads, states, strict=True)
        ]  # fmt: skip
        fused_params = [p.copy() for p in params]
        moments = [[a.copy() for a in s[1:] if a is not None] for s in states]
        view = (lambda a: a.view(np.uint16)) if kind == "bfloat16-bits" else (lambda a: a)
        fused_cpu.multi_tensor_step(
            [view(p) for p in fused_params], [view(g) for g in grads],
            [m[0] for m in moments], [m[1] for m in moments],
            [m[2] for m in moments] if amsgrad else None, 3, **hyperparameters,
        )  # fmt: skip
        for result, ours, our_moments in zip(pure, fused_params, moments, strict=True):
            assert ours.dtype == dtype
            assert _ulps_apart(ours, result.param) <= 1
            reference = [result.exp_avg, result.exp_avg_sq] + (
                [result.max_exp_avg_sq] if amsgrad else []
            )
            for a, b in zip(our_moments, reference, strict=True):
                np.testing.assert_array_equal(a, b)  # float32 state: the same bits


def test_16_bit_bits_round_trip_through_the_kernel_with_nan_and_inf():
    """A step with lr = 0 keeps theta: bits -> float32 -> bits gives back every 16-bit value."""
    values = np.array(
        [0.0, -0.0, 1.0, 65504.0, -65504.0, np.inf, -np.inf, np.nan, 6e-8, -6e-8, 1e-5, 6.1e-5,
         3e38, 1e-40, 1.00390625],
        dtype=np.float32,
    )  # fmt: skip
    for dtype in (np.float16, _bfloat16()):
        with np.errstate(over="ignore"):
            expected = values.astype(dtype)
        ours = expected.copy()
        zeros = np.zeros(values.shape, np.float32)
        fused_cpu.multi_tensor_step(
            [ours], [np.zeros_like(ours)], [zeros.copy()], [zeros.copy()], [zeros.copy()], 1,
            lr=0.0, b1=0.9, b2=0.999, eps=1e-8, partial=0.125,
        )  # fmt: skip
        np.testing.assert_array_equal(ours.astype(np.float32), expected.astype(np.float32))


def test_16_bit_rounding_matches_numpy_and_ml_dtypes_on_random_bits():
    """The kernel's float32 -> 16-bit casts: nearest even, overflow to inf, NaN stays NaN."""
    rng = np.random.default_rng(3)
    values = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    values = values.view(np.float32)
    values = np.concatenate([values[np.isfinite(values)], np.float32([65519.996, 65520.0])])
    casts = (
        (_loop.f32_to_half_array, np.float16),
        (_loop.f32_to_bf16_array, _bfloat16()),
    )
    for cast, dtype in casts:
        with np.errstate(over="ignore"):
            expected = values.astype(dtype).view(np.uint16)
        np.testing.assert_array_equal(cast(values), expected)
    special = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0], dtype=np.float32)
    for cast, dtype in casts:
        back = cast(special).view(dtype).astype(np.float32)
        np.testing.assert_array_equal(back, special)
        assert np.array_equal(np.signbit(back[2:]), np.signbit(special[2:]))


def test_many_small_arrays_in_one_call_match_pure_kernel():
    rng = np.random.default_rng(4)
    shapes = [tuple(rng.integers(0, 40, size=rng.integers(0, 3))) for _ in range(300)]
    for combination in [
        ("reference", True, (0.01, False), False),
        ("optax", False, (0.01, True), True),
    ]:
        _assert_close(*_run(np.float32, 0.125, combination, shapes, steps=3), general_power=False)


def test_mixed_dtypes_in_one_call():
    rng = np.random.default_rng(5)
    params = [rng.normal(size=5).astype(np.float32), rng.normal(size=4), rng.normal(size=3)]
    params.append(rng.normal(size=6).astype(np.float16))
    grads = [np.cos(p) for p in params]
    states = [padam_core.init(p) for p in params]
    hyperparameters = _hyperparameters(0.125, "reference", True, 0.0, False, False)
    pure = [
        padam_core.padam_step(p, g, s.exp_avg, s.exp_avg_sq, s.max_exp_avg_sq, 1, **hyperparameters)
        for p, g, s in zip(params, grads, states, strict=True)
    ]
    fused_cpu.multi_tensor_step(
        params, grads, [s.exp_avg for s in states], [s.exp_avg_sq for s in states],
        [s.max_exp_avg_sq for s in states], 1, **hyperparameters,
    )  # fmt: skip
    for param, result in zip(params, pure, strict=True):
        np.testing.assert_array_equal(param, result.param)


def test_rejected_call_writes_nothing():
    good = [np.ones(4, np.float32) for _ in range(5)]
    bad = [np.ones(4, np.float32) for _ in range(4)] + [np.ones(4, np.float64)]
    before = [a.copy() for a in good]
    with pytest.raises(TypeError, match="dtypes differ"):
        fused_cpu.multi_tensor_step(
            [good[0], bad[0]], [good[1], bad[1]], [good[2], bad[2]], [good[3], bad[3]],
            [good[4], bad[4]], 1, lr=0.1, b1=0.9, b2=0.99, eps=1e-8, partial=0.125,
        )  # fmt: skip
    for a, b in zip(good, before, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="contiguous"):
        strided = np.ones((4, 4), np.float32)[:, 0]
        fused_cpu.multi_tensor_step(
            [strided], [strided], [strided], [strided], [strided], 1,
            lr=0.1, b1=0.9, b2=0.99, eps=1e-8, partial=0.125,
        )  # fmt: skip
    with pytest.raises(ValueError, match="max_exp_avg_sqs"):
        fused_cpu.multi_tensor_step(
            good[:1], good[1:2], good[2:3], good[3:4], None, 1,
            lr=0.1, b1=0.9, b2=0.99, eps=1e-8, partial=0.125,
        )  # fmt: skip


@pytest.mark.parametrize("variant", padam_core.VARIANTS)
@pytest.mark.parametrize("partial", [0.125, 0.3])
def test_overflowing_gradients_saturate_to_finite_state(variant, partial):
    """|g| = 1e30 in float32: g^2 overflows; v and v_hat saturate at finfo.max, all finite."""
    fmax = float(np.finfo(np.float32).max)
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 0.1
    rng = np.random.default_rng(6)
    theta0 = rng.normal(size=64).astype(np.float32)
    grad = (np.sign(rng.normal(size=64)) * 1e30).astype(np.float32)
    param, m, v, v_hat = theta0.copy(), *(np.zeros(64, np.float32) for _ in range(3))
    fused_cpu.multi_tensor_step(
        [param], [grad], [m], [v], [v_hat], 1,
        lr=lr, b1=b1, b2=b2, eps=eps, partial=partial, variant=variant,
    )  # fmt: skip
    for array in (param, m, v, v_hat):
        assert np.isfinite(array).all()
    # The saturated formula, re-derived in float64 (step 1, zero state).
    g = grad.astype(np.float64)
    bc1, bc2 = 1 - b1, 1 - b2
    m_expected = (1 - b1) * g
    assert (1 - b2) * 1e60 > fmax  # v = (1 - b2) * g^2 overflows float32: saturated
    v_expected = fmax
    second = np.minimum(v_expected / bc2, fmax) if variant == "optax" else v_expected
    v_hat_expected = np.maximum(0.0, second)
    root = np.sqrt(v_hat_expected)
    if variant == "reference":
        expected = theta0 - lr * np.sqrt(bc2) / bc1 * m_expected / (root + eps) ** (2 * partial)
    elif variant == "torch":
        expected = theta0 - lr / bc1 * m_expected / ((root / np.sqrt(bc2)) ** (2 * partial) + eps)
    else:
        expected = theta0 - lr * (m_expected / bc1) / (root ** (2 * partial) + eps)
    np.testing.assert_allclose(m, m_expected, rtol=1e-6)
    np.testing.assert_array_equal(v, np.float32(v_expected))
    np.testing.assert_allclose(v_hat, np.float32(v_hat_expected), rtol=1e-6)
    np.testing.assert_allclose(param, expected, rtol=1e-5)


def test_supports_only_contiguous_writable_numpy_floats_alike():
    a = np.ones(4, np.float32)
    assert fused_cpu.supports(a, a.copy())
    assert not fused_cpu.supports(a, np.ones(4, np.float64))
    assert fused_cpu.supports(np.ones(4, np.float16), np.ones(4, np.float16), a)
    assert not fused_cpu.supports(
        np.ones(4, np.float16), np.ones(4, np.float16), a.astype(np.float16)
    )
    assert not fused_cpu.supports(np.ones(4, np.int32))
    assert not fused_cpu.supports(np.ones((4, 4), np.float32)[:, 0])
    assert not fused_cpu.supports(a, np.ones(5, np.float32))
    read_only = np.ones(4, np.float32)
    read_only.flags.writeable = False
    assert not fused_cpu.supports(read_only)
    with pytest.raises(TypeError, match="contiguous NumPy"):
        fused_cpu.padam_step_inplace(a, a, a, a, np.ones(4), 1, lr=0.1, b1=0.9, b2=0.99,
                                     eps=1e-8, partial=0.125)  # fmt: skip


@pytest.mark.parametrize("partial", [0.125, 0.3])
def test_optimizer_gives_the_same_numbers_fused_or_not(partial, monkeypatch):
    fused_calls = []
    multi_tensor_step = fused_cpu.multi_tensor_step
    monkeypatch.setattr(
        fused_cpu,
        "multi_tensor_step",
        lambda *args, **kwargs: (
            fused_calls.append(len(args[0])) or multi_tensor_step(*args, **kwargs)
        ),
    )
    rng = np.random.default_rng(1)
    start = {
        "w": rng.normal(size=(5, 6)).astype(np.float32),
        "b": rng.normal(size=6),
        "h": rng.normal(size=3).astype(np.float16),
        "s": rng.normal(size=6),
    }
    runs = []
    for fused in (None, False):
        params = {k: v.copy() for k, v in start.items()}
        params["s"] = np.zeros((6, 2))[:, 0]  # strided: the pure kernel takes it
        params["s"][...] = start["s"]
        optimizer = padam_core.Padam(params, partial=partial, weight_decay=0.01, fused=fused)
        for step in range(20):
            grads = {k: np.cos(step + v * 3).astype(v.dtype) for k, v in start.items()}
            optimizer.step(grads)
        runs.append({k: v.copy() for k, v in params.items()})
        # fused=None: one call per step for the three contiguous arrays; False: never.
        assert fused_calls == [3] * 20
    for key in start:
        if partial == 0.125:
            np.testing.assert_array_equal(runs[0][key], runs[1][key])
        else:  # exp2/log2 polynomials against NumPy: a few ulps apart
            np.testing.assert_allclose(
                runs[0][key], runs[1][key], rtol=2e-3 if key == "h" else 1e-5
            )


_FRESH_PROCESS = """
import json, numpy as np
{prelude}
from padam_core import fused_cpu
from padam_core.fused_cpu import _loop
a = [np.ones(10, np.float32) for _ in range(5)]
fused_cpu.multi_tensor_step(*([x] for x in a), 1, lr=0.1, b1=0.9, b2=0.999, eps=1e-8,
                            partial=0.125)
stats = _loop.multi_tensor_kernel.stats
hits, misses = sum(stats.cache_hits.values()), sum(stats.cache_misses.values())
print(json.dumps([hits, misses, stats.cache_path is not None]))
"""


def _fresh_process(cache_dir, prelude: str = "") -> tuple[list, str]:
    root = pathlib.Path(__file__).resolve().parents[2]
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), PYTHONPATH=str(root))
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", _FRESH_PROCESS.format(prelude=prelude)],
        env=env, cwd=root, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_a_fresh_process_reuses_the_disk_cache(tmp_path):
    (hits, misses, cached), _ = _fresh_process(tmp_path)
    assert cached and misses == 1 and hits == 0  # an empty cache: compiled once, and saved
    assert any(tmp_path.rglob("*.nbi")) and any(tmp_path.rglob("*.nbc"))
    (hits, misses, _), _ = _fresh_process(tmp_path)
    assert hits == 1 and misses == 0  # loaded from disk, nothing compiled


def test_no_writable_cache_location_compiles_without_warnings(tmp_path):
    # Every numba cache location refuses to be written (as for a read-only install with no
    # writable home): the loop is compiled in the process, with no error and no warning.
    prelude = (
        "import numba.core.caching as caching\n"
        "def refuse(self): raise PermissionError('read-only')\n"
        "caching._CacheLocator.ensure_cache_path = refuse\n"
    )
    (hits, misses, cached), stderr = _fresh_process(tmp_path, prelude)
    assert not cached and hits == 0 and misses == 1  # no disk cache: compiled here
    assert stderr == ""
    assert not any(tmp_path.iterdir())
