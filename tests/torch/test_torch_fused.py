"""padam_torch's fused path (padam_core's compiled multi-tensor kernel on the tensors' memory).

The oracle is the canonical kernel, :func:`padam_core.padam_step` on NumPy arrays, tensor by
tensor (16-bit parameters: computed in float32 and rounded once, padam_core's policy); against
it the fused path must agree to the last bit (but for a general power, pow). The single-tensor
torch path is the same kernel on torch tensors, whose CPU division may differ in the last place
(vectorised loops multiply by a reciprocal), so it is compared within a tolerance.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

import padam_core
from padam_torch import Padam
from padam_torch import fused as fused_path
from tests.torch.helpers import core_hyperparameters

pytestmark = pytest.mark.skipif(
    fused_path.cpu_kernel() is None,
    reason="needs numba and padam_core.fused_cpu.multi_tensor_step",
)

VARIANTS = padam_core.VARIANTS
DECAY = {
    "none": {},
    "coupled": {"weight_decay": 0.1},
    "decoupled": {"weight_decay": 0.1, "decoupled_weight_decay": True},
}
DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


def _shapes() -> list[tuple[int, ...]]:
    return [(7, 5), (), (0,), (3,), (4, 1, 2)]


def _params(dtype: torch.dtype, seed: int = 0, shapes=None) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype).requires_grad_()
        for shape in (shapes or _shapes())
    ]


def _clone(params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p.detach().clone().requires_grad_() for p in params]


def _run(
    params_sets: list[list[torch.Tensor]],
    optimizers: list[Padam],
    steps: int = 4,
    seed: int = 1,
) -> None:
    """The same random gradients (scaled so that v spans orders of magnitude) into each set."""
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        grads = [
            (torch.randn(p.shape, generator=generator, dtype=torch.float64) * 10.0 ** (step - 2))
            for p in params_sets[0]
        ]
        for params, optimizer in zip(params_sets, optimizers, strict=True):
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad.to(param.dtype)
            optimizer.step()


class _KernelOracle:
    """padam_core.padam_step on NumPy, tensor by tensor, with Padam's state layout."""

    def __init__(self, params: list[torch.Tensor], **kwargs) -> None:
        self.params = params
        self.kwargs = core_hyperparameters(kwargs)
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def step(self) -> None:
        amsgrad = self.kwargs["amsgrad"]
        for param in self.params:
            if param.grad is None:
                continue
            real = torch.view_as_real if param.is_complex() else (lambda t: t)
            compute = torch.float32 if param.dtype in (torch.float16, torch.bfloat16) else None
            state = self.state.setdefault(param, {})
            if not state:
                state["step"] = torch.tensor(0.0)
                for key in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ()):
                    state[key] = torch.zeros_like(param, dtype=compute)
            state["step"] += 1

            def host(tensor: torch.Tensor, real=real, compute=compute) -> np.ndarray:
                tensor = real(tensor.detach())
                return tensor.to(compute).numpy() if compute else tensor.numpy()

            result = padam_core.padam_step(
                host(param), host(param.grad), host(state["exp_avg"]),
                host(state["exp_avg_sq"]),
                host(state["max_exp_avg_sq"]) if amsgrad else None,
                int(state["step"].item()), **self.kwargs,
            )  # fmt: skip
            with torch.no_grad():
                real(param).copy_(torch.from_numpy(np.asarray(result.param)))
                for key in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ()):
                    real(state[key]).copy_(torch.from_numpy(np.asarray(getattr(result, key))))


def _assert_same(first: Padam, second: Padam, params_a, params_b, exact: bool = True) -> None:
    for a, b in zip(params_a, params_b, strict=True):
        if exact:
            assert torch.equal(a, b), (a, b)
        else:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        state_a, state_b = first.state[a], second.state[b]
        assert state_a.keys() == state_b.keys()
        for key in state_a:
            assert state_a[key].dtype == state_b[key].dtype, key
            if exact or key == "step":
                assert torch.equal(state_a[key], state_b[key]), key
            else:
                torch.testing.assert_close(state_a[key], state_b[key], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    ("variant", "amsgrad", "decay", "maximize"),
    list(itertools.product(VARIANTS, (True, False), DECAY, (False, True))),
)
def test_fused_equals_the_canonical_kernel(dtype, variant, amsgrad, decay, maximize):
    kwargs = {"lr": 0.01, "variant": variant, "amsgrad": amsgrad, "maximize": maximize}
    kwargs.update(DECAY[decay])
    fused_params = _params(dtype)
    single_params = _clone(fused_params)
    fused = Padam(fused_params, fused=True, **kwargs)
    single = _KernelOracle(single_params, **kwargs)
    _run([fused_params, single_params], [fused, single])
    _assert_same(fused, single, fused_params, single_params)
    assert fused.state[fused_params[0]]["step"].dtype == torch.float32


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("variant", VARIANTS)
def test_fused_is_close_to_the_single_tensor_torch_path(dtype, variant):
    fused_params = _params(dtype)
    single_params = _clone(fused_params)
    fused = Padam(fused_params, lr=0.01, variant=variant, weight_decay=0.1, fused=True)
    single = Padam(single_params, lr=0.01, variant=variant, weight_decay=0.1, foreach=False)
    _run([fused_params, single_params], [fused, single])
    for a, b in zip(fused_params, single_params, strict=True):
        tolerance = {"rtol": 1e-2, "atol": 1e-2} if dtype.itemsize == 2 else {}
        torch.testing.assert_close(a, b, **tolerance)


@pytest.mark.parametrize("partial", [0.5, 0.25, 0.0625, 0.0, 0.3])
@pytest.mark.parametrize("variant", VARIANTS)
def test_fused_equals_the_kernel_for_every_power(partial, variant):
    fused_params = _params(torch.float32)
    single_params = _clone(fused_params)
    fused = Padam(fused_params, lr=0.01, partial=partial, variant=variant, fused=True)
    single = _KernelOracle(single_params, lr=0.01, partial=partial, variant=variant)
    _run([fused_params, single_params], [fused, single])
    # A general power (pow) may differ in the last place between implementations.
    _assert_same(fused, single, fused_params, single_params, exact=partial != 0.3)


def test_many_small_tensors_and_several_groups_and_dtypes():
    shapes = [(int(n),) for n in torch.randint(0, 40, (300,), generator=torch.manual_seed(3))]
    first = _params(torch.float32, shapes=shapes[:200])
    second = _params(torch.bfloat16, shapes=shapes[200:]) + _params(torch.float64, shapes=[(5, 2)])
    copies = [_clone(first), _clone(second)]
    groups = [{"params": first}, {"params": second, "lr": 0.05, "variant": "torch"}]
    fused = Padam(groups, lr=0.01, fused=True)
    oracles = [
        _KernelOracle(copies[0], lr=0.01),
        _KernelOracle(copies[1], lr=0.05, variant="torch"),
    ]

    class Both(_KernelOracle):
        def __init__(self) -> None:
            self.state = {**oracles[0].state, **oracles[1].state}

        def step(self) -> None:
            for oracle in oracles:
                oracle.step()
            self.state.update({**oracles[0].state, **oracles[1].state})

    single = Both()
    _run([first + second, copies[0] + copies[1]], [fused, single])
    _assert_same(fused, single, first + second, copies[0] + copies[1])


def test_complex_non_contiguous_and_channels_last_parameters():
    generator = torch.Generator().manual_seed(0)
    params = [
        torch.randn(4, 3, dtype=torch.complex64, generator=generator).requires_grad_(),
        torch.randn(5, 6, generator=generator).t().requires_grad_(),  # transposed: copies
        torch.randn(2, 3, 4, 5, generator=generator)
        .to(memory_format=torch.channels_last)
        .requires_grad_(),
    ]
    copies = _clone(params)
    fused = Padam(params, lr=0.01, fused=True)
    single = _KernelOracle(copies, lr=0.01)
    for step in range(3):
        for a, b in zip(params, copies, strict=True):
            grad = torch.randn(a.shape, dtype=a.dtype, generator=generator) * (step + 1)
            a.grad, b.grad = grad.clone(), grad.clone()
        fused.step()
        single.step()
    _assert_same(fused, single, params, copies)


def test_parameters_with_different_step_counts():
    params = _params(torch.float32, shapes=[(6,), (6,)])
    copies = _clone(params)
    fused = Padam(params, lr=0.01, fused=True)
    single = _KernelOracle(copies, lr=0.01)
    for step in range(4):
        for index, (a, b) in enumerate(zip(params, copies, strict=True)):
            skip = index == 1 and step < 2  # the second one starts late
            grad = None if skip else torch.full((6,), 0.1 * (step + 1))
            a.grad = None if grad is None else grad.clone()
            b.grad = None if grad is None else grad.clone()
        fused.step()
        single.step()
    _assert_same(fused, single, params, copies)
    assert fused.state[params[1]]["step"].item() == 2.0


def _kernel_spy(monkeypatch) -> list[int]:
    """Count calls of padam_core's compiled multi-tensor loop (and how many arrays each got),
    which both the planned path and the public multi_tensor_step end in."""
    from padam_core import fused_cpu

    calls: list[int] = []
    for name in ("multi_tensor_kernel", "multi_tensor_kernel_serial"):
        kernel = getattr(fused_cpu._loop, name, None)
        if kernel is None:
            continue

        def spy(addresses, *args, kernel=kernel):
            calls.append(len(addresses))
            return kernel(addresses, *args)

        monkeypatch.setattr(fused_cpu._loop, name, spy)
    return calls


def test_default_takes_the_fused_path_on_cpu_in_one_call(monkeypatch):
    calls = _kernel_spy(monkeypatch)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = Padam(model.parameters())
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    assert calls == [4]
    assert optimizer.param_groups[0]["fused"] is None


@pytest.mark.parametrize(
    "kwargs", [{"fused": False}, {"foreach": False}, {"foreach": True}, {"capturable": True}]
)
def test_fused_false_and_other_paths_never_call_the_kernel(monkeypatch, kwargs):
    calls = _kernel_spy(monkeypatch)
    param = torch.randn(5, requires_grad=True)
    optimizer = Padam([param], **kwargs)
    param.grad = torch.ones(5)
    optimizer.step()
    assert calls == []


def test_default_without_the_kernel_falls_back_and_fused_true_is_refused(monkeypatch):
    monkeypatch.setattr(fused_path, "cpu_kernel", lambda: None)
    param = torch.randn(5, requires_grad=True)
    param.grad = torch.ones(5)
    Padam([param]).step()  # foreach, as before
    with pytest.raises(RuntimeError, match="install numba"):
        Padam([param], fused=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"fused": True, "foreach": True}, RuntimeError, "`fused` and `foreach` cannot be"),
        ({"fused": True, "differentiable": True}, RuntimeError, "does not support `differen"),
        ({"fused": "yes"}, TypeError, "fused must be None, True or False"),
    ],
)
def test_torch_errors_for_impossible_combinations(kwargs, error, message):
    with pytest.raises(error, match=message):
        Padam([torch.randn(3, requires_grad=True)], **kwargs)
    with pytest.raises(error, match=message):
        Padam([torch.randn(3, requires_grad=True)]).add_param_group(
            {"params": [torch.randn(2, requires_grad=True)], **kwargs}
        )


def test_unsupported_device_is_refused_before_any_state_is_created():
    good = torch.randn(3, requires_grad=True)
    meta = torch.empty(3, device="meta", requires_grad=True)
    good.grad, meta.grad = torch.ones(3), torch.empty(3, device="meta")
    optimizer = Padam([good, meta], fused=True)
    with pytest.raises(RuntimeError, match="`fused=True` requires all the params to be float"):
        optimizer.step()
    assert len(optimizer.state) == 0


def test_a_failing_kernel_leaves_steps_and_parameters_unchanged(monkeypatch):
    from padam_core import fused_cpu

    param = torch.randn(4, requires_grad=True)
    optimizer = Padam([param], fused=True)
    param.grad = torch.ones(4)
    optimizer.step()
    before = copy.deepcopy(optimizer.state_dict()), param.detach().clone()

    def broken(*args, **kwargs):
        raise MemoryError("simulated")

    monkeypatch.setattr(fused_cpu._loop, "multi_tensor_kernel", broken)
    monkeypatch.setattr(fused_cpu._loop, "multi_tensor_kernel_serial", broken, raising=False)
    with pytest.raises(MemoryError):
        optimizer.step()
    assert optimizer.state[param]["step"].item() == 1.0
    assert torch.equal(param, before[1])


def test_checkpoint_round_trip_and_old_checkpoints_without_fused():
    params = _params(torch.float32, shapes=[(5,), (2, 3)])
    reference = _clone(params)
    optimizer = Padam(params, lr=0.01, fused=True)
    uninterrupted = Padam(reference, lr=0.01, fused=True)
    _run([params, reference], [optimizer, uninterrupted], steps=2)
    saved = copy.deepcopy(optimizer.state_dict())
    assert saved["param_groups"][0]["fused"] is True
    del saved["param_groups"][0]["fused"]  # a checkpoint from before the option existed
    resumed = Padam(params, lr=0.01, fused=True)
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["fused"] is True
    _run([params, reference], [resumed, uninterrupted], steps=2, seed=5)
    _assert_same(resumed, uninterrupted, params, reference)
    # pickled optimizers without "fused" in their groups load too (setdefault)
    state = resumed.__getstate__()
    for group in state["param_groups"]:
        del group["fused"]
    del state["defaults"]["fused"]
    revived = Padam.__new__(Padam)
    revived.__setstate__(state)
    assert revived.param_groups[0]["fused"] is None


def test_views_are_rebuilt_when_a_parameter_gets_new_memory():
    param = torch.randn(6, requires_grad=True)
    copy_ = param.detach().clone().requires_grad_()
    fused, single = Padam([param], lr=0.01, fused=True), _KernelOracle([copy_], lr=0.01)
    _run([[param], [copy_]], [fused, single], steps=1)
    with torch.no_grad():
        new = torch.randn(6)
        param.data = new.clone()
        copy_.data = new.clone()
    _run([[param], [copy_]], [fused, single], steps=2)
    _assert_same(fused, single, [param], [copy_])


def _compiled_training(fused, steps: int = 3):
    torch.manual_seed(0)
    eager_model = torch.nn.Linear(4, 3)
    compiled_model = copy.deepcopy(eager_model)
    eager = Padam(eager_model.parameters(), lr=0.01, fused=fused)
    compiled = Padam(compiled_model.parameters(), lr=0.01, fused=fused)

    @torch.compile(backend="aot_eager")
    def compiled_step(x):
        compiled.zero_grad()
        compiled_model(x).square().sum().backward()
        compiled.step()

    for _ in range(steps):
        x = torch.randn(5, 4)
        eager.zero_grad()
        eager_model(x).square().sum().backward()
        eager.step()
        compiled_step(x)
    for a, b in zip(eager_model.parameters(), compiled_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fused", [None, True])
def test_torch_compile_of_a_training_step(fused):
    """fused=None compiles the foreach path; fused=True runs the kernel as a graph break."""
    torch._dynamo.reset()
    _compiled_training(fused)


@pytest.mark.parametrize("amsgrad", [True, False])
def test_single_tensor_path_in_slices_equals_it_whole(monkeypatch, amsgrad):
    """foreach=False runs the kernel on slices of large tensors (small temporaries)."""
    from padam_torch import functional

    sliced_params = _params(torch.float64, shapes=[(50, 3), (7,)])
    whole_params = _clone(sliced_params)
    sliced = Padam(sliced_params, lr=0.01, amsgrad=amsgrad, foreach=False)
    whole = Padam(whole_params, lr=0.01, amsgrad=amsgrad, foreach=False)
    monkeypatch.setattr(functional, "_SLICE", 16)
    generator = torch.Generator().manual_seed(2)
    for _ in range(3):
        for a, b in zip(sliced_params, whole_params, strict=True):
            grad = torch.randn(a.shape, generator=generator, dtype=a.dtype)
            a.grad, b.grad = grad.clone(), grad.clone()
        sliced.step()
        monkeypatch.setattr(functional, "_SLICE", 1 << 30)
        whole.step()
        monkeypatch.setattr(functional, "_SLICE", 16)
    for a, b in zip(sliced_params, whole_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("amsgrad", [True, False])
@pytest.mark.parametrize("variant", VARIANTS)
def test_public_multi_tensor_step_path_equals_the_kernel(monkeypatch, dtype, amsgrad, variant):
    """Without fused_cpu's internals the fused path calls the public multi_tensor_step."""
    monkeypatch.setattr(fused_path, "_cpu_internals", lambda: None)
    calls = _kernel_spy(monkeypatch)
    kwargs = {"lr": 0.01, "variant": variant, "amsgrad": amsgrad, "weight_decay": 0.1}
    fused_params = _params(dtype)
    oracle_params = _clone(fused_params)
    fused = Padam(fused_params, fused=True, **kwargs)
    oracle = _KernelOracle(oracle_params, **kwargs)
    _run([fused_params, oracle_params], [fused, oracle])
    _assert_same(fused, oracle, fused_params, oracle_params)
    assert len(calls) == 4


def test_plan_is_rebuilt_when_state_is_loaded_or_tensors_change():
    params = _params(torch.float32, shapes=[(5,), (3, 2)])
    oracle_params = _clone(params)
    fused = Padam(params, lr=0.01, fused=True)
    oracle = _KernelOracle(oracle_params, lr=0.01)
    _run([params, oracle_params], [fused, oracle], steps=2)
    fused.load_state_dict(copy.deepcopy(fused.state_dict()))  # new state tensors
    _run([params, oracle_params], [fused, oracle], steps=2, seed=4)
    _assert_same(fused, oracle, params, oracle_params)
