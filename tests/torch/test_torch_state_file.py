"""padam_torch.save_state / load_state: the shared state file, applied all or nothing."""

from __future__ import annotations

import re

import pytest
import torch

from padam_core import state_file
from padam_torch import Padam, load_state, save_state
from tests.conformance.state_files import malformed_files, read_raw

pytest.importorskip("safetensors")


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))


def train(model: torch.nn.Module, optimizer: Padam, steps: int, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(8, 4, generator=generator)).square().mean().backward()
        optimizer.step()


def snapshot(model: torch.nn.Module, optimizer: Padam):
    params = [p.detach().clone() for p in model.parameters()]
    state = {
        index: {key: value.clone() for key, value in optimizer.state[p].items()}
        for index, p in enumerate(model.parameters())
        if p in optimizer.state
    }
    return params, state


def assert_same(before, after):
    (params_a, state_a), (params_b, state_b) = before, after
    for a, b in zip(params_a, params_b, strict=True):
        assert torch.equal(a, b)
    assert state_a.keys() == state_b.keys()
    for index, entries in state_a.items():
        assert entries.keys() == state_b[index].keys()
        for key, value in entries.items():
            assert torch.equal(value, state_b[index][key]), (index, key)


def test_round_trip_continues_bitwise(tmp_path):
    straight_model = make_model()
    straight = Padam(straight_model.parameters(), lr=0.01, weight_decay=0.01)
    train(straight_model, straight, 10)

    model = make_model()
    first = Padam(model.parameters(), lr=0.01, weight_decay=0.01)
    train(model, first, 4)
    path = tmp_path / "state.safetensors"
    save_state(path, first)
    second = Padam(model.parameters(), lr=0.01, weight_decay=0.01)
    load_state(path, second)
    for param in model.parameters():
        assert second.state[param]["step"].item() == 4
        assert second.state[param]["step"].dtype == torch.float32
    generator_state = torch.Generator().manual_seed(1)
    for _ in range(4):  # the same batches the straight run saw at steps 5-10
        torch.randn(8, 4, generator=generator_state)
    for _ in range(6):
        second.zero_grad()
        model(torch.randn(8, 4, generator=generator_state)).square().mean().backward()
        second.step()
    for a, b in zip(model.parameters(), straight_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_file_layout_names_and_metadata(tmp_path):
    model = make_model()
    optimizer = Padam(model.named_parameters(), lr=0.01, variant="torch")
    train(model, optimizer, 2)
    path = tmp_path / "state.safetensors"
    save_state(path, optimizer)
    tensors, metadata = read_raw(path)
    assert metadata["format"] == "padam.state" and metadata["format_version"] == "1"
    assert metadata["variant"] == "torch" and metadata["amsgrad"] == "true"
    assert int(tensors["step"]) == 2 and tensors["step"].dtype.name == "int64"
    names = [name for name, _ in model.named_parameters()]
    loaded = state_file.read_state_file(path, expected=None, variant=None, amsgrad=None)
    assert loaded.names == names
    for index, param in enumerate(model.parameters()):
        assert tensors[f"state/{index}/exp_avg"].shape == tuple(param.shape)
    assert loaded.hyperparameters["lr"] == 0.01


def test_never_stepped_parameters_get_state(tmp_path):
    model = make_model()
    optimizer = Padam(model.parameters(), lr=0.01)
    train(model, optimizer, 3)
    path = tmp_path / "state.safetensors"
    save_state(path, optimizer)
    fresh = Padam(model.parameters(), lr=0.01)
    assert len(fresh.state) == 0
    load_state(path, fresh)
    for param in model.parameters():
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert torch.equal(fresh.state[param][key], optimizer.state[param][key])
    # Saving an optimizer that never stepped writes zeros at step 0.
    save_state(tmp_path / "zero.safetensors", Padam(make_model().parameters()))
    zero = state_file.read_state_file(tmp_path / "zero.safetensors", expected=None,
                                      variant=None, amsgrad=None)  # fmt: skip
    assert zero.step == 0 and all(not a.any() for a in zero.exp_avg_sq)


def test_param_groups_are_read_in_order_and_must_agree_on_variant(tmp_path):
    model = make_model()
    first, second = list(model.parameters())[:2], list(model.parameters())[2:]
    optimizer = Padam([{"params": first}, {"params": second, "lr": 0.001}], lr=0.01)
    train(model, optimizer, 2)
    path = tmp_path / "state.safetensors"
    save_state(path, optimizer)
    flat = Padam(model.parameters(), lr=0.01)
    load_state(path, flat)
    for param in model.parameters():
        assert torch.equal(flat.state[param]["exp_avg"], optimizer.state[param]["exp_avg"])
    mixed = Padam([{"params": first}, {"params": second, "variant": "optax"}])
    with pytest.raises(ValueError, match="param groups differ"):
        save_state(path, mixed)


def test_complex_parameters_are_refused(tmp_path):
    optimizer = Padam([torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))])
    with pytest.raises(ValueError, match="complex"):
        save_state(tmp_path / "state.safetensors", optimizer)


def test_every_malformed_file_is_rejected_and_nothing_changes(tmp_path):
    source = make_model(seed=5)
    other = Padam(source.parameters(), lr=0.02)
    train(source, other, 3, seed=9)
    good = tmp_path / "good.safetensors"
    save_state(good, other)

    model = make_model()
    optimizer = Padam(model.parameters(), lr=0.01)
    train(model, optimizer, 2)
    before = snapshot(model, optimizer)
    cases = malformed_files(good, tmp_path, variant="reference")
    assert len(cases) > 30
    for message, path in cases:
        with pytest.raises(
            ValueError, match=r"Cannot read Padam state from .*" + re.escape(message)
        ):
            load_state(path, optimizer)
        assert_same(before, snapshot(model, optimizer))
    # A bigger model's file: a parameter's state missing here is an error, too.
    bigger = torch.nn.Sequential(*make_model(), torch.nn.Linear(2, 2))
    bigger_optimizer = Padam(bigger.parameters())
    with pytest.raises(ValueError, match="holds state for 4 parameters, the optimizer has 6"):
        load_state(good, bigger_optimizer)
    assert len(bigger_optimizer.state) == 0
    # Sanity: the good file loads.
    load_state(good, optimizer)
    assert optimizer.state[next(model.parameters())]["step"].item() == 3
