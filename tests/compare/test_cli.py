"""``padam compare`` flags, config file and errors (no training here: all fail or print early)."""

from __future__ import annotations

import math
import tomllib

import pytest

from padam_compare.cli import main
from padam_compare.config import (
    DEFAULT_OPTIMIZER_OPTIONS,
    ConfigError,
    build_config,
    load_toml,
)


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["compare", "--epochs", "0"], "--epochs: expected a positive integer"),
        (["compare", "--epochs", "ten"], "--epochs: expected a positive integer"),
        (["compare", "--optimizers", "sgd", "rmsprop"], "invalid choice: 'rmsprop'"),
        (["compare", "--partials", "0.7"], "partial must satisfy 0 <= p <= 1/2"),
        (["compare", "--partials", "1/0"], "expected p as a number or fraction"),
        (["compare", "--dataset", "imagenet"], "invalid choice: 'imagenet'"),
        (["compare", "--framework", "mxnet"], "invalid choice: 'mxnet'"),
        (["compare", "--weight-decay", "-1"], "expected a finite number >= 0"),
        (["compare", "--lr", "padam"], "expected NAME=VALUE"),
        (["compare", "--lr", "rmsprop=0.1"], "unknown optimizer 'rmsprop'"),
        (["compare", "--lr", "padam=fast"], "optimizer padam setting lr must be a number"),
        (["compare", "--lr", "adam=-0.1"], "optimizer adam setting lr must be a finite number"),
        (["compare", "--set", "padam.momentum=0.9"], "optimizer padam has no setting 'momentum'"),
        (["compare", "--set", "padam.variant=fancy"], "variant must be one of reference"),
        (["compare", "--set", "sgd.momentum=1.5"], "must be < 1"),
        (["compare", "--set", "adam.betas=0.9"], "must be two numbers in"),
        (["compare", "--model", "vgg16"], "use it with --dataset cifar10 or cifar100"),
        (["compare", "--dataset", "digits", "--model", "cnn1d"], "cnn1d takes 1-D signals"),
        (["compare", "--seeds", "1", "1"], "seeds lists a seed twice"),
        (["compare", "--optimizers", "sgd", "sgd"], "optimizers lists a name twice"),
        (["compare", "--device", "tpu"], "device must be auto, cpu or cuda"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_flags_exit_2_with_usage(argv, message, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2
    assert "usage: padam" in err
    assert message in err
    assert out == ""


def test_no_subcommand_prints_help_and_fails(capsys):
    code, _, err = run([], capsys)
    assert code == 2 and "compare" in err


def test_help_exits_0(capsys):
    code, out, _ = run(["compare", "--help"], capsys)
    assert code == 0
    assert "--partials" in out and "--data-dir" in out


def test_missing_cifar_directory_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "no-cifar-here"
    code, _, err = run(
        [
            "compare",
            "--preset",
            "paper-resnet18",
            "--data-dir",
            str(missing),
            "--output-dir",
            str(tmp_path / "out"),
            "--no-progress",
        ],
        capsys,
    )
    assert code == 1
    assert f"cifar10 data directory does not exist: {missing}" in err


def test_unwritable_output_directory_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, _, err = run(["compare", "--output-dir", str(blocker / "out"), "--no-progress"], capsys)
    assert code == 1
    assert f"cannot write to output directory {blocker / 'out'}" in err


def test_cifar_without_data_dir_says_so(tmp_path, capsys):
    code, _, err = run(
        ["compare", "--preset", "paper-vgg16", "--no-progress", "--output-dir", str(tmp_path)],
        capsys,
    )
    assert code == 1 and "give its directory with --data-dir" in err


def test_malformed_cifar_directory_is_a_clear_error(cifar10_dir, tmp_path, capsys):
    directory, _ = cifar10_dir
    (directory / "data_batch_4").write_bytes(b"\x80\x02garbage")
    code, _, err = run(
        [
            "compare",
            "--preset",
            "paper-wrn16-4",
            "--data-dir",
            str(directory),
            "--no-progress",
            "--output-dir",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert code == 1
    assert "data_batch_4 is not a valid CIFAR batch" in err


def test_print_config_shows_the_paper_defaults(capsys):
    code, out, _ = run(["compare", "--print-config"], capsys)
    assert code == 0
    values = tomllib.loads(out)
    assert values["weight_decay"] == 5e-4 and values["batch_size"] == 128
    assert values["optimizer"]["padam"]["lr"] == 0.1
    assert values["optimizer"]["sgd"]["lr"] == 0.1 and values["optimizer"]["sgd"]["momentum"] == 0.9
    assert values["optimizer"]["adam"]["lr"] == 0.001
    assert values["optimizer"]["amsgrad"]["lr"] == 0.001
    assert values["partials"] == [0.125]


def test_paper_presets_are_the_paper_recipe(capsys):
    code, out, _ = run(["compare", "--preset", "paper-resnet18", "--print-config"], capsys)
    values = tomllib.loads(out)
    assert code == 0
    assert (values["model"], values["dataset"], values["epochs"]) == ("resnet18", "cifar10", 200)
    assert values["milestones"] == [100, 150] and values["lr_decay"] == 0.1


def test_config_file_then_flags(tmp_path, capsys):
    path = tmp_path / "my.toml"
    path.write_text(
        "epochs = 7\nseeds = [4, 5]\npartials = [0.25]\nweight_decay = 0\n"
        '[optimizer.padam]\nlr = 0.05\nvariant = "optax"\n'
        "[optimizer.adam]\nbetas = [0.9, 0.99]\n"
    )
    code, out, _ = run(
        ["compare", "--config", str(path), "--epochs", "9", "--lr", "sgd=0.2", "--print-config"],
        capsys,
    )
    values = tomllib.loads(out)
    assert code == 0
    assert values["epochs"] == 9  # the flag wins over the file
    assert values["seeds"] == [4, 5] and values["partials"] == [0.25]
    assert values["weight_decay"] == 0.0
    assert values["optimizer"]["padam"] == {
        **values["optimizer"]["padam"],
        "lr": 0.05,
        "variant": "optax",
    }
    assert values["optimizer"]["adam"]["betas"] == [0.9, 0.99]
    assert values["optimizer"]["sgd"]["lr"] == 0.2


def test_printed_config_reads_back_identically(tmp_path, capsys):
    argv = [
        "compare",
        "--partials",
        "1/8",
        "1/4",
        "--set",
        "adamw.weight_decay=0.01",
        "--milestones",
        "3",
        "--print-config",
    ]
    code, out, _ = run(argv, capsys)
    assert code == 0
    path = tmp_path / "round.toml"
    path.write_text(out)
    again = build_config(file_values=load_toml(path))
    assert again.partials == [0.125, 0.25]
    assert again.milestones == [3]
    assert again.optimizer["adamw"]["weight_decay"] == 0.01
    assert again.optimizer["sgd"] == DEFAULT_OPTIMIZER_OPTIONS["sgd"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochs = ", "is not valid TOML"),
        ("epoch = 3", "unknown setting 'epoch'"),
        ('epochs = "3"', "epochs must be an integer"),
        ("seeds = [0, 1.5]", "seeds must be a list of integers"),
        ("[optimizer.rmsprop]\nlr = 1", "[optimizer.rmsprop]: unknown optimizer"),
        ("[optimizer.sgd]\nlearning_rate = 1", "optimizer sgd has no setting 'learning_rate'"),
    ],
)
def test_malformed_config_file_exits_2(tmp_path, capsys, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, _, err = run(["compare", "--config", str(path), "--print-config"], capsys)
    assert code == 2
    assert message in err and "usage: padam compare" in err


def test_missing_config_file(tmp_path, capsys):
    code, _, err = run(["compare", "--config", str(tmp_path / "none.toml")], capsys)
    assert code == 2 and "config file not found" in err


def test_default_milestones_scale_the_paper_schedule():
    config = build_config(flag_values={"epochs": 200})
    assert config.resolved_milestones() == [100, 150]
    config = build_config(flag_values={"epochs": 40})
    assert config.resolved_milestones() == [20, 30]
    assert not math.isnan(config.target_loss)


def test_padam_runs_once_per_partial():
    config = build_config(flag_values={"partials": [0.125, 0.25, 0.5]})
    labels = [run.label for run in config.optimizer_runs()]
    assert labels == [
        "SGD-momentum",
        "Adam",
        "AMSGrad",
        "AdamW",
        "Padam p=1/8",
        "Padam p=1/4",
        "Padam p=1/2",
    ]
    padam = config.optimizer_runs()[-1]
    assert padam.options["partial"] == 0.5 and padam.options["weight_decay"] == 5e-4
    adamw = config.optimizer_runs()[3]
    assert adamw.options["weight_decay"] == 0.05  # AdamW's own decoupled value


def test_padam_runs_once_per_variant_and_partial():
    config = build_config(
        flag_values={
            "optimizers": ["padam"], "partials": [0.125, 0.5], "variants": ["torch", "optax"]
        }
    )
    runs = config.optimizer_runs()
    assert [run.label for run in runs] == [
        "Padam p=1/8 torch", "Padam p=1/2 torch", "Padam p=1/8 optax", "Padam p=1/2 optax",
    ]  # fmt: skip
    assert [run.options["variant"] for run in runs] == ["torch", "torch", "optax", "optax"]
    with pytest.raises(ConfigError, match="unknown variant"):
        build_config(flag_values={"variants": ["adam"]})
