"""`cep train` and `cep run`: results folders, the seed README's command lines, one-line errors."""

from __future__ import annotations

import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cep.cli import LEGACY_FIELD_NAMES, TRAIN_FIELD_NAMES, cli, legacy_config, run_main
from cep.config import ConfigError, TrialConfig
from cep.presets import paper_config

COMMANDS = [line for line in (Path(__file__).parent / "seed_readme_commands.txt").read_text().splitlines()
            if line.startswith("cep run ")]
QUICK = ["--train-samples", "200", "--test-samples", "100", "--device", "cpu"]


def cep(args: list[str], capsys, names=TRAIN_FIELD_NAMES) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        run_main(cli, names, args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_every_seed_readme_command_is_accepted():
    assert len(COMMANDS) == 27
    for line in COMMANDS:
        cfg = legacy_config(shlex.split(line)[2:])
        assert cfg.dataset == "mnist" and cfg.data_dir == "./data" and cfg.device in ("auto", "cpu")
        assert cfg.action == ("gdu" if "plotcurves" in line else "train")


def test_seed_readme_commands_map_to_the_published_configurations():
    first = legacy_config(shlex.split(COMMANDS[0])[2:])
    assert first.replace(out_dir=None) == paper_config("EP-1h", dataset="mnist", data_dir="./data", out_dir=None,
                                                       checkpoint=True)  # cep run resumes by default
    for line, name in zip(COMMANDS[:6], ["EP-1h", "EP-2h", "C-EP-1h", "C-EP-2h", "C-VF-1h", "C-VF-2h"]):
        cfg = legacy_config(shlex.split(line)[2:])
        assert cfg.replace(out_dir=None) == paper_config(name, dataset="mnist", data_dir="./data", out_dir=None,
                                                         checkpoint=True)
    spelled = legacy_config(shlex.split(COMMANDS[2].replace("--cep", "--c-ep"))[2:])
    assert spelled.continual
    gdu = legacy_config(shlex.split(COMMANDS[14])[2:])  # Fig. 5(b), continuous EP
    assert (gdu.setting, gdu.no_clamp, gdu.batch_size, gdu.activation, gdu.T, gdu.Kmax, gdu.lr_tab) == \
           ("continuous", True, 1, "tanh", 800, 80, (0.05, 0.1))  # the original parser's default rates
    assert legacy_config(["--size_tab", "10", "512", "784", "--device-label", "-1"]).device == "cpu"


def test_cep_train_writes_a_results_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = cep(["train", "--preset", "C-VF-1h", "--angle", "45", "--epochs", "2", "--seed", "3",
                           "--sizes", "10,32,784", "--out", str(out), *QUICK], capsys)
    assert code == 0
    assert "final test error" in stdout and str(out) in stdout and "measured angle" in stdout
    cfg = TrialConfig.from_dict(yaml.safe_load((out / "config.yaml").read_text()))
    assert cfg == paper_config("C-VF-1h", angle=45, epochs=2, seed=3, size_tab=(10, 32, 784), out_dir=str(out),
                               train_samples=200, test_samples=100, device="cpu", checkpoint=True)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["final"]["test_error"] == float(rows[-1]["test_error"])
    assert 40 < summary["measured_angle"][0] < 50
    assert (out / "learning_curve.png").stat().st_size > 1000


def test_cep_train_checkpoint_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--preset", "EP-1h", "--epochs", "1", "--seed", "0", "--sizes", "10,16,784", "--out", str(out),
            "--checkpoint", "--quiet", *QUICK]
    assert cep(args, capsys)[0] == 0
    code, stdout, _ = cep(args, capsys)
    assert code == 0 and "resuming" in stdout
    code, _, err = cep([*args[:-len(QUICK) - 1], "--beta", "0.3", "--quiet", *QUICK], capsys)
    assert code == 2 and "different configuration" in err


def test_cep_run_trains_with_the_original_flags(tmp_path, capsys):
    out = tmp_path / "legacy"
    code, stdout, _ = cep(["run", "--action", "train", "--discrete", "--size_tab", "10", "16", "784", "--lr_tab",
                           "0.04", "0.08", "--epochs", "1", "--T", "10", "--Kmax", "4", "--beta", "0.1",
                           "--dataset", "mnist5k", "--seed", "0", "--out", str(out), *QUICK], capsys,
                          LEGACY_FIELD_NAMES)
    assert code == 0, stdout
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("args,needle", [
    (["train", "--lrs", "0.1,0.2,0.3"], "--lrs: 2 values needed for size_tab [10, 512, 784]"),
    (["train", "--beta", "0"], "--beta: got 0"),
    (["train", "--angle", "30"], "--angle: got 30.0 with rule ep"),
    (["train", "--debug-cep"], "--debug-cep: only for rule ep, setting discrete, continual true"),
    (["train", "--free-steps", "0"], "--free-steps: got 0"),
    (["train", "--epochs", "-1"], "--epochs: got -1"),
    (["train", "--batch-size", "0"], "--batch-size: got 0"),
    (["train", "--setting", "continuous", "--dt", "0"], "--dt: got 0.0"),
    (["train", "--sizes", "10,a,784"], "--sizes: got 'a'"),
    (["train", "--sizes", "10,99999999999,784", "--lrs", "0.1,0.1"], "synapses, more than the 200,000,000 a trial"),
    (["train", "--rule", "xx"], "Invalid value for '--rule'"),
    (["train", "--bogus"], "No such option '--bogus'"),
    (["train", "--device", "tpu"], "--device: got 'tpu'"),
    (["run", "--size_tab", "10", "512", "784", "--lr_tab", "0.1"], "--lr_tab: 2 values needed"),
    (["run", "--size_tab", "10", "512", "784", "--learning-rule", "xx"], "--learning-rule: unknown value 'xx'"),
    (["run", "--size_tab", "10", "512", "784", "--activation-function", "relu"], "--activation-function: unknown"),
    (["run", "--size_tab", "10", "512", "784", "--T", "ten"], "argument --T: invalid int value"),
    (["run", "--size_tab", "10", "512", "784", "--nope"], "unrecognized arguments: --nope"),
    (["run", "--size_tab", "10", "512", "784", "--epochs", "1", "--data-dir", "absent"],
     "could not be downloaded"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import torchvision.datasets.mnist as tvm

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(tvm.MNIST, "download", offline)  # behave the same with or without internet
    names = TRAIN_FIELD_NAMES if args[0] == "train" else LEGACY_FIELD_NAMES
    code, stdout, stderr = cep(args, capsys, names)
    assert code == 2
    assert needle in stderr, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_several_problems_are_listed_one_per_line():
    with pytest.raises(ConfigError) as e:
        TrialConfig(beta=0, T=0, rule="xx")
    assert len(str(e.value).splitlines()) == 3


def test_console_script_exit_code_without_traceback(tmp_path):
    exe = Path(sys.executable).with_name("cep")
    proc = subprocess.run([str(exe), "train", "--lrs", "1"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: --lrs")
