"""Arguments of the example scripts: embedded default < config file < flags, and clear refusals."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _value(groups, key: str):
    owners = [group for group in groups if hasattr(group, key)]
    assert owners, key
    value = getattr(owners[0], key)
    return getattr(value, "value", value)  # TrainingArguments turns some strings into enums


def _as_parsed(key: str, value):
    """An embedded value as the argument dataclasses store it."""
    return [] if key == "report_to" and value == "none" else value


@pytest.fixture(params=["run_pretrain", "run_finetune"])
def script(request):
    return _script(request.param)


def _parse(script, argv: list[str]):
    """What the script parses when started as `python examples/<script>.py *argv`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", [f"{script.__name__}.py", *argv])
        return script.parse_args()


def test_one_flag_keeps_every_other_embedded_value(script, tmp_path):
    groups = _parse(script, ["--output_dir", str(tmp_path / "x"), "--max_steps", "3"])
    assert _value(groups, "output_dir") == str(tmp_path / "x")
    assert _value(groups, "max_steps") == 3
    for key, value in script.EMBEDDED_DEFAULT.items():
        if key != "output_dir":
            assert _value(groups, key) == _as_parsed(key, value), key


def test_no_argument_is_the_embedded_default(script):
    groups = _parse(script, [])
    for key, value in script.EMBEDDED_DEFAULT.items():
        assert _value(groups, key) == _as_parsed(key, value), key


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_file_first_then_flags_on_top(script, tmp_path, suffix):
    path = tmp_path / f"config{suffix}"
    values = {"max_steps": 5, "learning_rate": 2e-4, "output_dir": str(tmp_path / "from-file")}
    if suffix == ".json":
        path.write_text(json.dumps(values))
    else:
        path.write_text("max_steps: 5\nlearning_rate: 2e-4\n" f"output_dir: {tmp_path / 'from-file'}\n")
    groups = _parse(script, [str(path), "--max_steps", "1"])
    assert _value(groups, "max_steps") == 1  # the flag wins over the file
    assert _value(groups, "learning_rate") == pytest.approx(2e-4)  # the file wins over the default
    assert _value(groups, "output_dir") == str(tmp_path / "from-file")
    key = "per_device_train_batch_size"
    assert _value(groups, key) == script.EMBEDDED_DEFAULT[key]  # the rest stays the embedded default


def test_unknown_key_in_a_config_file_is_named(script, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"max_step": 5}))
    with pytest.raises(ValueError, match=r"config\.json.*'max_step'"):
        _parse(script, [str(path)])
    broken = tmp_path / "broken.yaml"
    broken.write_text("max_steps: [1\n")
    with pytest.raises(ValueError, match=r"broken\.yaml"):
        _parse(script, [str(broken)])
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        _parse(script, [str(tmp_path / "missing.yaml")])


def test_save_steps_under_an_embedded_save_strategy_no_is_refused(script):
    assert script.EMBEDDED_DEFAULT["save_strategy"] == "no"
    with pytest.raises(ValueError, match=r"--save_steps.*--save_strategy steps"):
        _parse(script, ["--save_steps", "100"])
    groups = _parse(script, ["--save_steps", "100", "--save_strategy", "steps"])
    assert _value(groups, "save_steps") == 100


def test_eval_benchmarks_none_turns_evaluation_off(script):
    groups = _parse(script, ["--eval_benchmarks", "none"])
    assert _value(groups, "eval_benchmarks") == []


def test_help_shows_the_embedded_values(capsys):
    script = _script("run_pretrain")
    with pytest.raises(SystemExit) as exit_info:
        _parse(script, ["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {script.EMBEDDED_DEFAULT['output_dir']})" in text


def test_bf16_default_follows_the_hardware_and_an_explicit_bf16_on_a_slow_cpu_warns(script, tmp_path, monkeypatch,
                                                                                      caplog):
    """bfloat16 is embedded only where it is fast; asking for it on a CPU that emulates it warns, naming the fix."""
    from gadms_hf.training import arguments

    assert script.EMBEDDED_DEFAULT["bf16"] is arguments.bf16_is_fast()
    # (accelerator present, extra flags, CPU emulates bf16) -> warned?
    cases = [(False, [], True, True), (False, [], False, False), (True, ["--use_cpu", "True"], True, True)]
    for accelerator, flags, emulated, warns in cases:
        monkeypatch.setattr(arguments, "_has_accelerator", lambda accelerator=accelerator: accelerator)
        monkeypatch.setattr(arguments, "cpu_computes_bf16", lambda emulated=emulated: not emulated)
        caplog.clear()
        with caplog.at_level("WARNING", logger="gadms_hf"):
            groups = _parse(script, ["--output_dir", str(tmp_path / "x"), "--bf16", "True", *flags])
        assert _value(groups, "bf16") is True and _value(groups, "use_cpu") is True
        warned = [record.getMessage() for record in caplog.records if "--bf16 False" in record.getMessage()]
        assert len(warned) == (1 if warns else 0), (accelerator, flags, emulated, warned)


def test_bf16_is_fast_asks_for_native_support_only(monkeypatch):
    """A pre-Ampere GPU (bf16 emulated) and a CPU without native kernels get float32 in the CPU regime."""
    import torch

    from gadms_hf.training import arguments

    asked = []

    def gpu_supports(including_emulation: bool = True) -> bool:
        asked.append(including_emulation)
        return including_emulation  # what an emulating GPU answers

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", gpu_supports)
    assert arguments.bf16_is_fast() is False and asked == [False]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(arguments, "_has_accelerator", lambda: False)
    for native in (True, False):
        monkeypatch.setattr(arguments, "cpu_computes_bf16", lambda native=native: native)
        assert arguments.bf16_is_fast() is native and arguments.cpu_regime_training()["bf16"] is native
    assert arguments.cpu_regime_training().keys() >= {"optimizer_name", "weight_decay", "random_erasing"}
