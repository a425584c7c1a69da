"""What the YAML reader says is true: merge keys are YAML (and merged), a key `on:` is shown as written, and a
file of 100,000 plain values is not blamed on aliases."""

from __future__ import annotations

import pytest

from cep.sweep.spec import SweepError, load_sweep
from cep.yaml_file import YAMLFileError, read_yaml


def test_merge_keys_are_merged_and_overridable(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("defaults: &d {epochs: 1, seed: 3}\nrun:\n  <<: *d\n  seed: 4\n")
    assert read_yaml(path) == {"defaults": {"epochs": 1, "seed": 3}, "run": {"epochs": 1, "seed": 4}}


def test_a_repeated_key_beside_a_merge_is_still_refused(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("d: &d {epochs: 1}\nrun: {<<: *d, seed: 1, seed: 2}\n")
    with pytest.raises(YAMLFileError, match="key 'seed' repeats"):
        read_yaml(path)


def test_a_sweep_with_merge_keys_loads(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nbase:\n  <<: {dataset: mnist5k, epochs: 1, train_samples: 40, test_samples: 20}\n"
                    "  size_tab: [10, 8, 784]\n")
    assert load_sweep(path).trials[0].config.epochs == 1


@pytest.mark.parametrize("word", ["on", "yes", "off", "No"])
def test_a_key_that_yaml_1_1_reads_as_a_boolean_is_shown_as_written(word, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\nbase: {{dataset: mnist5k, {word}: 3}}\n")
    with pytest.raises(SweepError) as e:
        load_sweep(path)
    assert f"base.{word}: unknown trial field {word!r}" in e.value.problems[0], e.value.problems
    assert read_yaml(tmp_path / "s.yaml")["base"] == {"dataset": "mnist5k", word: 3}


def test_values_stay_booleans(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("a: on\nb: [yes, no]\n")
    assert read_yaml(path) == {"a": True, "b": [True, False]}


def test_100000_plain_values_are_not_blamed_on_aliases(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("x: [" + ", ".join(["1"] * 100_001) + "]\n")
    with pytest.raises(YAMLFileError) as e:
        read_yaml(path)
    assert "alias" not in str(e.value) and "more than 100,000 values" in str(e.value)
    path.write_text("a: &a [" + ", ".join(["1"] * 1000) + "]\nb: [" + ", ".join(["*a"] * 200) + "]\n")
    with pytest.raises(YAMLFileError, match="aliases"):
        read_yaml(path)
