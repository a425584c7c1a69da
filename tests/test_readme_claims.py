"""Smaller README claims, checked against what the code does: --threads on every training command, the default
thread count, which sweeps ask for a GPU, the layout table, the gdu warning's option name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from cep.cli import LEGACY_FIELD_NAMES, TRAIN_FIELD_NAMES, cli, run_main
from cep.config import TrialConfig
from cep.device import default_threads

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
TINY = ["--train-samples", "40", "--test-samples", "20", "--device", "cpu"]


def cep(args: list[str], capsys, names=TRAIN_FIELD_NAMES) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        run_main(cli, names, args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_cep_run_and_cep_gdu_take_threads_as_the_readme_says(tmp_path, capsys):
    assert "`cep train` (and `cep run`, `cep gdu`) trains on one CPU thread" in README
    assert "`--threads N` sets another count" in README
    code, _, err = cep(["run", "--action", "train", "--discrete", "--size_tab", "10", "8", "784", "--lr_tab", "0.04",
                        "0.08", "--T", "3", "--Kmax", "2", "--dataset", "mnist5k", "--seed", "0", "--threads", "2",
                        "--out", str(tmp_path / "run"), *TINY], capsys, LEGACY_FIELD_NAMES)
    assert code == 0, err
    assert "2 thread(s)" in (tmp_path / "run" / "trial.log").read_text()
    torch.set_num_threads(1)
    code, _, err = cep(["gdu", "--sizes", "10,8,784", "--free-steps", "2", "--nudged-steps", "2", "--seed", "0",
                        "--threads", "2", "--out", str(tmp_path / "gdu"), "--device", "cpu"], capsys)
    assert code == 0, err
    assert torch.get_num_threads() == 2
    # two free steps do not settle: the warning names the option of the command that was run
    assert "free phase has not settled" in err and "--free-steps" in err


def test_a_large_net_gets_a_second_thread_not_one_per_two_million_weights():
    big = TrialConfig(size_tab=(10, 4096, 4096, 784), lr_tab=(0.1, 0.1, 0.1))  # 20 million forward weights
    assert big.n_synapses > 10 * 2_000_000
    assert default_threads(big, cpus=16) == 2 and default_threads(big, cpus=1) == 1
    assert default_threads(TrialConfig(size_tab=(10, 512, 512, 784), lr_tab=(0.1, 0.1, 0.1)), cpus=16) == 1
    assert "a net of\nmore than 2 million forward weights gets a second thread" in README


def test_the_sweeps_the_readme_says_ask_for_a_quarter_gpu_do_and_the_others_ask_for_none():
    sentence = README[README.index("The paper's training sweeps"):README.index("run on CPUs.")]
    quarter, none = sentence.split("ask for a quarter GPU")
    named_quarter = set(re.findall(r"`([\w.]+\.yaml)`", quarter))
    named_none = set(re.findall(r"`([\w.]+\.yaml)`", none))
    gpu = {p.name: yaml.safe_load(p.read_text())["resources"]["gpu"] for p in (ROOT / "sweeps").glob("*.yaml")}
    assert named_quarter and named_none
    assert named_quarter == {name for name, g in gpu.items() if g == 0.25}
    assert all(gpu[name] == 0 for name in named_none)


def test_the_layout_table_names_every_module():
    section = README[README.index("## Layout"):README.index("## Benchmarks")]
    named = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        folder = None
        for word in re.findall(r"`([^`]+)`", line.split("|")[1]):
            if "/" in word:
                folder, _ = word.rsplit("/", 1)
                named.add(word)
            elif folder:
                named.add(f"{folder}/{word}")  # `cep/aggregate/read.py`, `stats.py`: the same folder
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "cep").rglob("*.py") if p.name != "__init__.py"}
    assert not modules - named, f"modules missing from README's layout table: {sorted(modules - named)}"
