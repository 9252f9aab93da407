"""padam_core.Padam and update() with a scheduled partial and the non-finite guard, and the
compiled all-finite check of the fused CPU path (issue 11, sections 1 and 3)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import padam_core
from padam_core import fused_cpu, schedules
from padam_core.state_file import read_state_file

SCHEDULES = [
    schedules.constant(0.3),
    schedules.linear(0.5, 0.125, steps=20),
    schedules.cosine(0.5, 0.0, steps=30),
    schedules.piecewise([10, 25], [0.5, 0.25, 0.125]),
]
STEPS = 40
# docs/numerics.md: two implementations from the same float32 inputs, 1e-5 after 100 steps.
CROSS = 1e-5
FUSED = [None, False] if fused_cpu.available() else [False]
SUFFIXES = [".npz", ".safetensors"]


def relative(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(x.astype(np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30))


def make_params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "w": rng.normal(size=(6, 7)).astype(np.float32),
        "b": rng.normal(size=(5,)).astype(np.float32),
        "s": np.asarray(rng.normal(), dtype=np.float32),
    }


def make_grads(step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1000 + step)
    scale = 10.0 if step == 1 else 1.0
    return {
        "w": (rng.normal(size=(6, 7)) * scale).astype(np.float32),
        "b": (rng.normal(size=(5,)) * scale).astype(np.float32),
        "s": np.asarray(rng.normal() * scale, dtype=np.float32),
    }


def loop_reference(partial, steps: int = STEPS, **hyperparameters) -> dict[str, list]:
    """A loop over padam_core.padam_step with partial = partial(t)."""
    params = make_params()
    state = {name: list(padam_core.init(p))[1:] for name, p in params.items()}
    current = dict(params)
    for t in range(1, steps + 1):
        grads = make_grads(t)
        for name in current:
            result = padam_core.padam_step(
                current[name], grads[name], *state[name], t, lr=0.05, partial=partial(t),
                **hyperparameters,
            )  # fmt: skip
            current[name] = result.param
            state[name] = [result.exp_avg, result.exp_avg_sq, result.max_exp_avg_sq]
    return {name: [current[name], *state[name]] for name in current}


def snapshot(optimizer: padam_core.Padam, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    flat = {f"param/{k}": v.copy() for k, v in params.items()}
    flat.update({k: np.array(v, copy=True) for k, v in optimizer.state_dict().items()})
    return flat


def assert_bitwise(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].tobytes() == b[key].tobytes(), key


# ---- schedules in padam_core.Padam ----------------------------------------------------


@pytest.mark.parametrize("fused", FUSED, ids=lambda f: f"fused={f}")
@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_scheduled_trajectory_matches_a_padam_step_loop(schedule, fused) -> None:
    expected = loop_reference(schedule)
    params = make_params()
    optimizer = padam_core.Padam(params, lr=0.05, partial=schedule, fused=fused)
    for t in range(1, STEPS + 1):
        optimizer.step(make_grads(t))
    assert optimizer.count == STEPS
    flat = optimizer.state_dict()
    for name, (param, m, v, v_hat) in expected.items():
        got = [params[name], flat[f"exp_avg/{name}"], flat[f"exp_avg_sq/{name}"],
               flat[f"max_exp_avg_sq/{name}"]]  # fmt: skip
        for array, reference in zip(got, (param, m, v, v_hat), strict=True):
            if fused is False:  # the same kernel with the same p: the same bits
                assert array.tobytes() == reference.tobytes(), name
            else:
                assert relative(array, reference) <= CROSS, name


@pytest.mark.skipif(not fused_cpu.available(), reason="numba is not installed")
def test_plateaus_take_the_square_root_chains_fused_and_pure_agree_bitwise() -> None:
    # Every value of this schedule is 1/2, 1/4 or 1/8: the fused loop and the pure kernel take
    # the same square-root chains, so they agree to the last bit (a general pow would not).
    schedule = schedules.piecewise([10, 25], [0.5, 0.25, 0.125])
    runs = []
    for fused in (True, False):
        params = make_params()
        optimizer = padam_core.Padam(params, lr=0.05, partial=schedule, fused=fused)
        for t in range(1, STEPS + 1):
            optimizer.step(make_grads(t))
        runs.append(snapshot(optimizer, params))
    assert_bitwise(*runs)


def test_plain_callable_partial_is_evaluated_at_the_one_based_step() -> None:
    seen: list[int] = []

    def partial(t: int) -> float:
        seen.append(t)
        return 0.25

    optimizer = padam_core.Padam(make_params(), partial=partial)
    for t in range(1, 4):
        optimizer.step(make_grads(t))
    assert seen == [1, 2, 3]


def test_bad_partial_and_flags_are_rejected_and_nothing_changes() -> None:
    with pytest.raises(ValueError, match="Invalid partial value"):
        padam_core.Padam(make_params(), partial="0.3")
    with pytest.raises(ValueError, match="Invalid skip_nonfinite value"):
        padam_core.Padam(make_params(), skip_nonfinite=1)
    params = make_params()
    optimizer = padam_core.Padam(params, partial=lambda t: 0.25 if t < 3 else 0.7)
    optimizer.step(make_grads(1))
    optimizer.step(make_grads(2))
    before = snapshot(optimizer, params)
    with pytest.raises(ValueError, match=r"at step 3.*Invalid partial value: 0\.7"):
        optimizer.step(make_grads(3))
    assert_bitwise(snapshot(optimizer, params), before)
    assert optimizer.count == 2


# ---- save / load with a schedule and skipped steps ------------------------------------


def _run_with_a_skip(schedule, params, steps=6):
    optimizer = padam_core.Padam(params, partial=schedule, skip_nonfinite=True)
    for t in range(1, steps + 1):
        grads = make_grads(t)
        if t == 3:
            grads["b"][2] = np.nan
        optimizer.step(grads)
    return optimizer


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_save_load_restores_schedule_and_skipped_steps(tmp_path, suffix) -> None:
    schedule = schedules.linear(0.5, 0.125, steps=8)
    params = make_params()
    first = _run_with_a_skip(schedule, params)
    assert (first.count, first.skipped_steps) == (5, 1)
    path = tmp_path / f"state{suffix}"
    first.save(path)

    resumed_params = {k: v.copy() for k, v in params.items()}
    second = padam_core.Padam(resumed_params, skip_nonfinite=True)  # default partial, 0 skips
    second.load(path)
    assert second.hyperparameters["partial"] == schedule
    assert (second.count, second.skipped_steps) == (5, 1)
    for t in range(7, 15):  # across the end of the ramp: p reaches 1/8 at t = 9
        first.step(make_grads(t))
        second.step(make_grads(t))
    assert_bitwise(snapshot(second, resumed_params), snapshot(first, params))


def test_the_state_file_format_is_unchanged_and_records_the_schedule(tmp_path) -> None:
    schedule = schedules.cosine(0.5, 0.125, steps=10)
    optimizer = _run_with_a_skip(schedule, make_params())
    path = tmp_path / "state.safetensors"
    optimizer.save(path)
    specs = [padam_core.state_file.TensorSpec(n, tuple(p.shape), p.dtype, p.dtype)
             for n, p in make_params().items()]  # fmt: skip
    # What every other adapter reads: moments and step only; the extras ride in the recorded
    # (unchecked) hyperparameters entry.
    loaded = read_state_file(path, expected=specs, variant=optimizer.hyperparameters["variant"],
                             amsgrad=True)  # fmt: skip
    assert loaded.step == 5
    assert loaded.hyperparameters["partial"] == schedule.get_config()
    assert loaded.hyperparameters["skipped_steps"] == 1
    json.dumps(loaded.hyperparameters)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_number_in_the_file_leaves_the_optimizers_partial(tmp_path, suffix) -> None:
    first = padam_core.Padam(make_params(), partial=0.25)
    first.step(make_grads(1))
    path = tmp_path / f"state{suffix}"
    first.save(path)
    schedule = schedules.piecewise([5], [0.5, 0.125])
    second = padam_core.Padam(make_params(), partial=schedule)
    second.load(path)
    assert second.hyperparameters["partial"] == schedule
    assert second.count == 1 and second.skipped_steps == 0


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_plain_callable_partial_cannot_be_saved(tmp_path, suffix) -> None:
    optimizer = padam_core.Padam(make_params(), partial=lambda t: 0.125)
    optimizer.step(make_grads(1))
    path = tmp_path / f"state{suffix}"
    with pytest.raises(ValueError, match=r"plain callable.*padam_core\.schedules"):
        optimizer.save(path)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left either


def test_bad_recorded_schedule_or_skips_are_rejected_and_nothing_changes(tmp_path) -> None:
    good = padam_core.Padam(make_params(), partial=schedules.constant(0.25))
    good.step(make_grads(1))
    flat = good.state_dict()
    params = make_params()
    optimizer = padam_core.Padam(params, partial=0.125, skip_nonfinite=True)
    optimizer.step(make_grads(1))
    before = snapshot(optimizer, params)
    bad_meta = {"partial": {"schedule": "linear", "start": 0.9, "end": 0.1, "steps": 3}}
    path = tmp_path / "bad.npz"
    meta = {"format": "padam_core.Padam", "version": "1", "hyperparameters": json.dumps(bad_meta)}
    padam_core.checkpoint.save_arrays(path, flat, meta)
    with pytest.raises(ValueError, match="linear start"):
        optimizer.load(path)
    meta["hyperparameters"] = "{}"
    padam_core.checkpoint.save_arrays(path, {**flat, "skipped_steps": np.asarray(-2)}, meta)
    with pytest.raises(ValueError, match="skipped_steps"):
        optimizer.load(path)
    with pytest.raises(ValueError, match="skipped_steps"):
        optimizer.load_state_dict({**flat, "skipped_steps": np.asarray(1.5)})
    assert_bitwise(snapshot(optimizer, params), before)
    assert optimizer.hyperparameters["partial"] == 0.125


def test_state_dict_carries_skipped_steps_and_older_dicts_load() -> None:
    optimizer = _run_with_a_skip(schedules.constant(0.125), make_params())
    flat = optimizer.state_dict()
    assert int(flat["skipped_steps"]) == 1
    other = padam_core.Padam(make_params(), skip_nonfinite=True)
    other.load_state_dict(flat)
    assert other.skipped_steps == 1
    older = {k: v for k, v in flat.items() if k != "skipped_steps"}
    fresh = padam_core.Padam(make_params())
    fresh.load_state_dict(older)
    assert fresh.count == 5 and fresh.skipped_steps == 0


# ---- the guard in padam_core.Padam ----------------------------------------------------


@pytest.mark.parametrize("fused", FUSED, ids=lambda f: f"fused={f}")
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_guard_skips_bitwise_and_the_run_continues_as_if_never_seen(fused, bad) -> None:
    schedule = schedules.linear(0.5, 0.125, steps=5)
    params = make_params()
    guarded = padam_core.Padam(params, lr=0.05, partial=schedule, fused=fused,
                               skip_nonfinite=True)  # fmt: skip
    clean_params = make_params()
    clean = padam_core.Padam(clean_params, lr=0.05, partial=schedule, fused=fused)
    for t in range(1, 4):
        guarded.step(make_grads(t))
        clean.step(make_grads(t))
    before = snapshot(guarded, params)
    poisoned = make_grads(99)
    poisoned["w"][3, 4] = bad  # one element of one gradient
    guarded.step(poisoned)
    assert guarded.skipped_steps == 1 and guarded.count == 3
    after_skip = snapshot(guarded, params)
    assert int(after_skip.pop("skipped_steps")) == 1 and int(before.pop("skipped_steps")) == 0
    assert_bitwise(after_skip, before)
    for t in range(4, 12):
        guarded.step(make_grads(t))
        clean.step(make_grads(t))
    after, reference = snapshot(guarded, params), snapshot(clean, clean_params)
    assert int(after.pop("skipped_steps")) == 1 and int(reference.pop("skipped_steps")) == 0
    assert_bitwise(after, reference)


def test_guard_counts_every_skip_and_the_lr_schedule_does_not_move() -> None:
    seen: list[int] = []

    def lr(t: int) -> float:
        seen.append(t)
        return 0.01

    optimizer = padam_core.Padam(make_params(), lr=lr, skip_nonfinite=True)
    optimizer.step(make_grads(1))
    for _ in range(3):
        grads = make_grads(2)
        grads["s"] = np.asarray(np.inf, dtype=np.float32)
        optimizer.step(grads)
    optimizer.step(make_grads(2))
    assert optimizer.skipped_steps == 3 and optimizer.count == 2
    assert set(seen) == {1, 2}


@pytest.mark.parametrize("fused", FUSED, ids=lambda f: f"fused={f}")
def test_guard_off_is_as_before(fused) -> None:
    # Default: a NaN gradient is an error (check_finite), nothing changes, nothing is counted.
    params = make_params()
    optimizer = padam_core.Padam(params, fused=fused)
    optimizer.step(make_grads(1))
    before = snapshot(optimizer, params)
    poisoned = make_grads(2)
    poisoned["b"][0] = np.nan
    with pytest.raises(ValueError, match="holds NaN or Inf"):
        optimizer.step(poisoned)
    assert_bitwise(snapshot(optimizer, params), before)
    assert optimizer.skipped_steps == 0
    # check_finite=False: the NaN propagates, as in the frameworks' own optimizers.
    unchecked = padam_core.Padam(params, fused=fused, check_finite=False)
    unchecked.step(poisoned)
    assert np.isnan(params["b"][0]) and unchecked.count == 1 and unchecked.skipped_steps == 0
    # On finite gradients the guard changes no bit.
    runs = []
    for skip in (False, True):
        params = make_params()
        optimizer = padam_core.Padam(params, fused=fused, skip_nonfinite=skip)
        for t in range(1, 8):
            optimizer.step(make_grads(t))
        runs.append(snapshot(optimizer, params))
    assert_bitwise(*runs)


# ---- padam_core.update (functional) ---------------------------------------------------


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_functional_schedule_matches_the_loop_python_and_array_counts(schedule) -> None:
    expected = loop_reference(schedule)
    for array_count in (False, True):
        params = make_params()
        state = padam_core.init(params)
        if array_count:  # a host array count: the schedule runs on arrays (as under jit)
            state = state._replace(count=np.asarray(0, dtype=np.int32))
        for t in range(1, STEPS + 1):
            params, state = padam_core.update(make_grads(t), state, params, lr=0.05,
                                              partial=schedule)  # fmt: skip
        assert int(state.count) == STEPS
        for name, (param, *_moments) in expected.items():
            if array_count:  # p computed in float32 from the count: within the tolerance
                assert relative(params[name], param) <= CROSS, name
            else:
                assert params[name].tobytes() == param.tobytes(), name


def test_functional_guard_returns_the_inputs_and_rejects_bad_flags() -> None:
    params = make_params()
    state = padam_core.init(params)
    params, state = padam_core.update(make_grads(1), state, params, lr=0.05)
    poisoned = make_grads(2)
    poisoned["s"] = np.asarray(np.nan, dtype=np.float32)
    same_params, same_state = padam_core.update(poisoned, state, params, skip_nonfinite=True)
    assert same_params is params and same_state is state
    new_params, new_state = padam_core.update(make_grads(2), state, params, skip_nonfinite=True)
    reference = padam_core.update(make_grads(2), state, params)
    assert new_state.count == 2
    for name in params:
        assert new_params[name].tobytes() == reference[0][name].tobytes()
    with pytest.raises(ValueError, match="Invalid skip_nonfinite value"):
        padam_core.update(make_grads(2), state, params, skip_nonfinite="yes")
    with pytest.raises(ValueError, match=r"at step 2.*Invalid partial value"):
        padam_core.update(make_grads(2), state, params, partial=lambda t: 0.9)


def test_functional_under_jit_schedule_and_guard_select_without_a_host_sync() -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    schedule = schedules.linear(0.5, 0.125, steps=4)
    compiles = []

    @jax.jit
    def step(grads, state, params):
        compiles.append(1)
        return padam_core.update(grads, state, params, lr=0.05, partial=schedule,
                                 skip_nonfinite=True)  # fmt: skip

    params = {k: jnp.asarray(v) for k, v in make_params().items()}
    state = padam_core.init(params)
    state = state._replace(count=jnp.asarray(0, dtype=jnp.int32))
    expected = loop_reference(schedule, steps=6)
    t = 0
    for index in range(8):
        grads = {k: jnp.asarray(v) for k, v in make_grads(t + 1).items()}
        if index in (2, 5):
            grads["w"] = grads["w"].at[0, 0].set(jnp.nan)
            new_params, new_state = step(grads, state, params)
            for old, new in zip(jax.tree_util.tree_leaves((params, state)),
                                jax.tree_util.tree_leaves((new_params, new_state)),
                                strict=True):  # fmt: skip
                assert np.asarray(old).tobytes() == np.asarray(new).tobytes()
            params, state = new_params, new_state
            continue
        params, state = step(grads, state, params)
        t += 1
    assert int(state.count) == 6 and len(compiles) == 1  # p changes, no recompilation
    for name, (param, *_moments) in expected.items():
        assert relative(np.asarray(params[name]), param) <= CROSS, name


# ---- the compiled all-finite check ----------------------------------------------------


def _bfloat16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    return np.dtype(ml_dtypes.bfloat16)


DTYPES = ["float16", "bfloat16", "float32", "float64", "complex64", "complex128"]


def _dtype(name: str) -> np.dtype:
    return _bfloat16() if name == "bfloat16" else np.dtype(name)


def _many(dtype: np.dtype, big: bool) -> list[np.ndarray]:
    """Arrays of mixed sizes (empty and 0-d among them); ``big``: enough chunks for the
    parallel kernel."""
    rng = np.random.default_rng(3)
    shapes = [(7,), (0,), (), (3, 0), (fused_cpu.CHUNK + 3,), (5, 4)]
    if big:
        shapes.append((fused_cpu.CHUNK * (2 * _threads() + 1) + 1,))
    arrays = []
    for shape in shapes:
        values = rng.normal(size=shape)
        if dtype.kind == "c":
            values = values + 1j * rng.normal(size=shape)
        arrays.append(np.asarray(values).astype(dtype))
    return arrays


def _threads() -> int:
    return fused_cpu._loop.numba.get_num_threads() if fused_cpu.available() else 1


@pytest.fixture(params=["compiled", "fallback"])
def mode(request, monkeypatch):
    if request.param == "compiled":
        if not fused_cpu.available():
            pytest.skip("numba is not installed")
    else:
        monkeypatch.setattr(fused_cpu, "_loop", None)
    return request.param


@pytest.mark.parametrize("big", [False, True], ids=["serial", "parallel"])
@pytest.mark.parametrize("name", DTYPES)
def test_all_finite_finds_one_bad_element_anywhere(mode, name, big) -> None:
    dtype = _dtype(name)
    arrays = _many(dtype, big)
    assert fused_cpu.all_finite(arrays) is True
    nonempty = [k for k, a in enumerate(arrays) if a.size]
    for k in (nonempty[0], nonempty[len(nonempty) // 2], nonempty[-1]):
        size = arrays[k].size
        for position in sorted({0, size // 2, size - 1}):
            for bad in (np.nan, np.inf, -np.inf):
                poisoned = [a.copy() for a in arrays]
                flat = poisoned[k].reshape(-1)
                flat[position] = complex(1.0, bad) if dtype.kind == "c" else bad
                assert fused_cpu.all_finite(poisoned) is False, (k, position, bad)
                assert bool(padam_core.all_finite(poisoned, xp=np)) is False


@pytest.mark.parametrize("name", DTYPES)
def test_all_finite_edges_are_finite(mode, name) -> None:
    dtype = _dtype(name)
    real = np.dtype(np.float32) if name == "bfloat16" else np.finfo(dtype).dtype
    finfo = np.finfo(_bfloat16()) if name == "bfloat16" else np.finfo(real)
    edges = [float(finfo.max), -float(finfo.max), 0.0, -0.0, float(finfo.smallest_subnormal)]
    arrays = [np.asarray(edges).astype(dtype)]
    assert fused_cpu.all_finite(arrays) is True
    assert fused_cpu.all_finite([]) is True
    assert fused_cpu.all_finite([np.zeros((0, 3), dtype)]) is True


def test_all_finite_bit_views_strided_readonly_and_mixed(mode) -> None:
    bits = np.array([0x3F80, 0x7F7F, 0xFF7F], dtype=np.uint16)  # bfloat16 1, max, -max
    assert fused_cpu.all_finite([bits, bits.view(np.int16)]) is True
    for bad in (0x7F80, 0xFF80, 0x7FC0):  # bfloat16 inf, -inf, NaN
        assert fused_cpu.all_finite([np.append(bits, np.uint16(bad))]) is False
    strided = np.ones((6, 8), np.float32)[:, ::2]
    readonly = np.ones(5, np.float64)
    readonly.flags.writeable = False
    ints = np.arange(5, dtype=np.int64)
    assert fused_cpu.all_finite([strided, readonly, ints, np.ones(3, bool)]) is True
    strided_bad = np.ones((6, 8), np.float32)
    strided_bad[5, 6] = np.nan
    assert fused_cpu.all_finite([readonly, strided_bad[:, ::2]]) is False
    assert fused_cpu.all_finite([readonly, strided_bad[:, 1::2]]) is True
    assert fused_cpu.all_finite(iter([np.ones(3, np.float32), np.ones(2, np.float64)])) is True


def test_all_finite_other_namespaces_fall_back() -> None:
    torch = pytest.importorskip("torch")
    assert fused_cpu.all_finite([torch.ones(3), np.ones(2)]) is True
    assert fused_cpu.all_finite([torch.tensor([1.0, float("inf")])]) is False


def test_functional_guard_on_an_empty_collection_and_fused_flag_type() -> None:
    params, state = padam_core.update([], padam_core.init([]), [], skip_nonfinite=True)
    assert params == [] and state.count == 1
    with pytest.raises(ValueError, match="Invalid fused value"):
        padam_core.Padam(make_params(), fused=1)
