"""A searcher library that is installed but fails to import is one line naming it and the fix."""

from __future__ import annotations

import builtins

import pytest

from cep.sweep.search_space import parse_search
from cep.sweep.searcher import make_searcher
from cep.sweep.spec import SweepError


@pytest.mark.parametrize("searcher,module", [("optuna", "optuna"), ("hyperopt", "ray.tune.search.hyperopt")])
def test_a_searcher_that_fails_to_import_is_one_line(searcher, module, monkeypatch):
    real = builtins.__import__

    def broken(name, *args, **kw):
        if name == module or name.startswith(module + "."):
            raise ImportError(f"cannot import name 'x' from '{module}' (a broken install)")
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", broken)
    problems: list[str] = []
    search = parse_search({"space": {"beta": {"uniform": [0.1, 0.5]}}, "num_samples": 2, "searcher": searcher},
                          problems)
    with pytest.raises(SweepError) as e:
        make_searcher(search)
    assert e.value.problems == [f"search.searcher: {searcher} is installed but cannot be imported (cannot import "
                                f"name 'x' from '{module}' (a broken install)); reinstall it: pip install -e "
                                f"\".[{searcher}]\" --force-reinstall"]
