"""padam_torch.Padam's planned step (padam_torch._step_plan): kept between steps, never stale.

Each scenario runs two optimizers on equal parameters: one as users get it (planned after its
first step) and one whose plans are switched off (the general fused path every step). Between
steps, the same change is made to both (parameters added or removed, a gradient gone, new
memory or dtype, state loaded or replaced, hyperparameters edited); both must then agree to the
last bit, and the planned one must really have taken its plan on the unchanged steps.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch

from padam_torch import Padam
from padam_torch import fused as fused_path

pytestmark = pytest.mark.skipif(
    fused_path._cpu_internals() is None, reason="needs numba and padam_core.fused_cpu"
)

SHAPES = [(7, 5), (), (3,), (4, 1, 2)]


def _params(dtype: torch.dtype = torch.float32, shapes=SHAPES) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [
        torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype).requires_grad_()
        for shape in shapes
    ]


class _Pair:
    """A planned and a general optimizer over equal parameters, stepped with equal grads."""

    def __init__(self, groups: Callable[[list[torch.Tensor]], list], **kwargs) -> None:
        self.params = [_params(), _params()]
        self.planned = Padam(groups(self.params[0]), **kwargs)
        self.general = Padam(groups(self.params[1]), **kwargs)
        self.general._plan_groups = lambda: None  # type: ignore[method-assign]
        self.generator = torch.Generator().manual_seed(1)
        self.planned_steps = 0
        planned_step = self.planned._planned_step

        def counting() -> bool:
            taken = planned_step()
            self.planned_steps += taken
            return taken

        self.planned._planned_step = counting  # type: ignore[method-assign]

    def optimizers(self) -> tuple[Padam, Padam]:
        return self.planned, self.general

    def step(self, steps: int = 1, skip: tuple[int, ...] = ()) -> None:
        """Equal random grads (none for the params at ``skip``), then a step of each."""
        for _ in range(steps):
            for index, (param_a, param_b) in enumerate(zip(*self._all_params(), strict=True)):
                if index in skip:
                    param_a.grad = param_b.grad = None
                    continue
                grad = torch.randn(param_a.shape, generator=self.generator, dtype=torch.float64)
                param_a.grad = grad.to(param_a.dtype)
                param_b.grad = grad.to(param_b.dtype)
            self.planned.step()
            self.general.step()

    def _all_params(self) -> list[list[torch.Tensor]]:
        return [
            [p for group in optimizer.param_groups for p in group["params"]]
            for optimizer in self.optimizers()
        ]

    def assert_same(self) -> None:
        params_a, params_b = self._all_params()
        assert len(params_a) == len(params_b)
        for a, b in zip(params_a, params_b, strict=True):
            assert a.dtype == b.dtype and torch.equal(a, b), (a, b)
            state_a, state_b = self.planned.state[a], self.general.state[b]
            assert state_a.keys() == state_b.keys()
            for key in state_a:
                assert torch.equal(state_a[key], state_b[key]), key


def _one_group(params):
    return params


def test_the_plan_is_taken_after_the_first_step_and_equals_the_general_path():
    pair = _Pair(_one_group, lr=0.01)
    pair.step(5)
    assert pair.planned_steps == 4
    pair.assert_same()


def test_the_plan_is_taken_by_default_and_with_fused_true_but_never_otherwise():
    for kwargs, planned in [({}, True), ({"fused": True}, True), ({"fused": False}, False),
                            ({"foreach": False}, False), ({"skip_nonfinite": True}, False),
                            ({"partial": lambda t: 0.125}, False)]:  # fmt: skip
        pair = _Pair(_one_group, lr=0.01, **kwargs)
        pair.step(3)
        assert pair.planned_steps == (2 if planned else 0), kwargs
        pair.assert_same()


def _append_param(optimizer: Padam, params: list[torch.Tensor]) -> None:
    optimizer.param_groups[0]["params"].append(torch.ones(4, requires_grad=True))


def _remove_param(optimizer: Padam, params: list[torch.Tensor]) -> None:
    optimizer.param_groups[0]["params"].pop(0)


def _new_memory(optimizer: Padam, params: list[torch.Tensor]) -> None:
    with torch.no_grad():
        params[0].data = params[0].data.clone()


def _new_dtype(optimizer: Padam, params: list[torch.Tensor]) -> None:
    """float64 now, with fresh state (the old float32 moments cannot serve it)."""
    with torch.no_grad():
        params[2].data = params[2].data.double()
    optimizer.state.pop(params[2])


def _replace_a_moment(optimizer: Padam, params: list[torch.Tensor]) -> None:
    state = optimizer.state[params[0]]
    state["exp_avg"] = state["exp_avg"] * 0.5


def _edit_a_count(optimizer: Padam, params: list[torch.Tensor]) -> None:
    for param in params:
        optimizer.state[param]["step"].fill_(100.0)


def _edit_one_count(optimizer: Padam, params: list[torch.Tensor]) -> None:
    optimizer.state[params[1]]["step"].fill_(7.0)  # counts differ: one call per count


def _reload(optimizer: Padam, params: list[torch.Tensor]) -> None:
    optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))


def _new_lr(optimizer: Padam, params: list[torch.Tensor]) -> None:
    optimizer.param_groups[0]["lr"] = 0.5


def _new_betas_in_place(optimizer: Padam, params: list[torch.Tensor]) -> None:
    optimizer.param_groups[0]["betas"] = [0.9, 0.999]
    optimizer.param_groups[0]["betas"][1] = 0.9  # a list edited in place


def _amsgrad_on(optimizer: Padam, params: list[torch.Tensor]) -> None:
    optimizer.param_groups[0]["amsgrad"] = True


def _new_variant(optimizer: Padam, params: list[torch.Tensor]) -> None:
    optimizer.param_groups[0]["variant"] = "optax"


def _add_group(optimizer: Padam, params: list[torch.Tensor]) -> None:
    optimizer.add_param_group({"params": [torch.ones(3, requires_grad=True)], "lr": 0.2})


def _clear_state(optimizer: Padam, params: list[torch.Tensor]) -> None:
    optimizer.state.clear()


# change -> (the change, planned steps of the 3 after it): 2 where the general path steps
# first and plans again, 3 where the plan takes the change itself (hyperparameters), 0 where
# the plan cannot describe the group any more (two dtypes, two step counts in one group).
CHANGES = {
    "param added": (_append_param, 0),  # its count lags the others
    "param removed": (_remove_param, 2),
    "new memory": (_new_memory, 2),
    "new dtype": (_new_dtype, 0),
    "moment replaced": (_replace_a_moment, 2),
    "counts edited": (_edit_a_count, 3),
    "one count edited": (_edit_one_count, 0),
    "state loaded": (_reload, 2),
    "lr edited": (_new_lr, 3),
    "betas list edited in place": (_new_betas_in_place, 3),
    "amsgrad switched on": (_amsgrad_on, 2),
    "variant edited": (_new_variant, 3),
    "group added": (_add_group, 2),
    "state cleared": (_clear_state, 2),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_change_between_steps_is_seen_by_the_planned_step(change):
    kwargs = {"amsgrad": False} if change == "amsgrad switched on" else {}
    pair = _Pair(_one_group, lr=0.01, **kwargs)
    pair.step(3)
    make_change, planned_after = CHANGES[change]
    for optimizer, params in zip(pair.optimizers(), pair.params, strict=True):
        make_change(optimizer, params)
    pair.step(3)
    pair.assert_same()
    assert pair.planned_steps == 2 + planned_after, pair.planned_steps


def test_a_missing_gradient_leaves_its_parameter_and_count_alone():
    pair = _Pair(_one_group, lr=0.01)
    pair.step(2)
    before = pair.params[0][1].detach().clone()
    count = pair.planned.state[pair.params[0][1]]["step"].item()
    pair.step(2, skip=(1,))
    assert torch.equal(pair.params[0][1], before)
    assert pair.planned.state[pair.params[0][1]]["step"].item() == count
    pair.step(2)  # counts now differ within the group: the general path, still equal
    pair.assert_same()


def test_a_non_contiguous_gradient_falls_back_to_the_general_path():
    pair = _Pair(_one_group, lr=0.01)
    pair.step(2)
    for params, optimizer in zip(pair.params, pair.optimizers(), strict=True):
        params[0].grad = torch.arange(35.0).reshape(5, 7).t()  # (7, 5), not contiguous
        for param in params[1:]:
            param.grad = torch.ones_like(param)
        optimizer.step()
    assert pair.planned_steps == 1
    pair.assert_same()


def test_several_groups_are_planned_together():
    def groups(params):
        return [{"params": params[:2]}, {"params": params[2:], "lr": 0.3, "weight_decay": 0.1}]

    pair = _Pair(groups, lr=0.01)
    pair.step(4)
    assert pair.planned_steps == 3
    pair.assert_same()


def test_an_invalid_edit_raises_as_the_general_path_and_changes_nothing():
    pair = _Pair(_one_group, lr=0.01)
    pair.step(2)
    params = pair.params[0]
    before = [p.detach().clone() for p in params]
    state = copy.deepcopy(pair.planned.state_dict())
    pair.planned.param_groups[0]["lr"] = -1.0
    for param in params:
        param.grad = torch.ones_like(param)
    with pytest.raises(ValueError, match=r"param group 0: Invalid lr value: -1\.0"):
        pair.planned.step()
    assert all(torch.equal(a, b) for a, b in zip(params, before, strict=True))
    after = pair.planned.state_dict()
    for key, saved in state["state"].items():
        for name, value in saved.items():
            assert torch.equal(after["state"][key][name], value)


def test_a_tensor_lr_filled_in_place_is_read_every_step():
    pair = _Pair(_one_group, lr=torch.tensor(0.01))
    pair.step(2)
    for optimizer in pair.optimizers():
        optimizer.param_groups[0]["lr"].fill_(0.3)
    pair.step(2)
    assert pair.planned_steps == 3
    pair.assert_same()
    with pytest.raises(ValueError, match="param group 0: Invalid lr value"):
        pair.planned.param_groups[0]["lr"].fill_(float("nan"))
        pair.step()


def test_a_parameter_moved_to_another_device_is_refused_not_written():
    """As Module.to moves it: a new Parameter in the group (meta: no memory to write)."""
    params = [torch.nn.Parameter(torch.randn(6)), torch.nn.Parameter(torch.randn(2))]
    optimizer = Padam(params, fused=True)
    for _ in range(2):
        for param in params:
            param.grad = torch.ones_like(param)
        optimizer.step()
    moved = torch.nn.Parameter(torch.empty(6, device="meta"))
    moved.grad = torch.empty(6, device="meta")
    optimizer.param_groups[0]["params"][0] = moved
    with pytest.raises(RuntimeError, match="`fused=True` requires all the params"):
        optimizer.step()


@pytest.mark.parametrize("fused", [None, True])
def test_versions_are_bumped_as_by_torch_adam(fused):
    """A parameter saved for backward and then stepped: autograd sees the in-place write, as
    after torch.optim.Adam's default (foreach) step; the kernel writes by address, so the
    version counters are bumped by hand."""
    for optimizer_class in (lambda params: Padam(params, fused=fused), torch.optim.Adam):
        param = torch.randn(3, requires_grad=True)
        optimizer = optimizer_class([param])
        for _ in range(3):  # the planned step from the second on
            loss = (param * param).sum()
            optimizer.zero_grad()
            loss.backward(retain_graph=True)
            version = param._version
            optimizer.step()
            assert param._version > version
            assert optimizer.state[param]["step"]._version > 0
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


def test_the_planned_step_reads_no_count_on_the_host(monkeypatch):
    params = _params()
    optimizer = Padam(params, lr=0.01)
    for param in params:
        param.grad = torch.ones_like(param)
    optimizer.step()

    def refused(self):
        raise AssertionError("a count was read with .item()")

    monkeypatch.setattr(torch.Tensor, "item", refused)
    optimizer.step()
    monkeypatch.undo()
    assert all(optimizer.state[p]["step"].item() == 2.0 for p in params)
