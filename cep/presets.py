"""The paper's published configurations (spec section 7): the six Fig. 4 trainings and the gradient-analysis
runs of Fig. 5(b) and Appendix E.6, as trial fields that `--preset`, the sweep files and the tests start from."""

from __future__ import annotations

from typing import Any

from cep.config import TrialConfig

PAPER_EXPERIMENTS: dict[str, dict[str, Any]] = {
    # spec section 7: the seed README's published command lines (all discrete, sigm)
    "EP-1h": dict(rule="ep", continual=False, size_tab=(10, 512, 784), lr_tab=(0.04, 0.08),
                  epochs=30, T=30, Kmax=10, beta=0.1),
    "EP-2h": dict(rule="ep", continual=False, size_tab=(10, 512, 512, 784), lr_tab=(0.005, 0.05, 0.2),
                  epochs=50, T=100, Kmax=20, beta=0.5),
    "C-EP-1h": dict(rule="ep", continual=True, size_tab=(10, 512, 784), lr_tab=(0.0028, 0.0056),
                    epochs=100, T=40, Kmax=15, beta=0.2),
    "C-EP-2h": dict(rule="ep", continual=True, size_tab=(10, 512, 512, 784),
                    lr_tab=(0.00018, 0.0018, 0.01), epochs=150, T=100, Kmax=20, beta=0.5),
    "C-VF-1h": dict(rule="vf", continual=True, size_tab=(10, 512, 784), lr_tab=(0.0038, 0.0076),
                    epochs=100, T=40, Kmax=15, beta=0.2, randbeta=0.5),
    "C-VF-2h": dict(rule="vf", continual=True, size_tab=(10, 512, 512, 784),
                    lr_tab=(0.00016, 0.0016, 0.009), epochs=150, T=100, Kmax=20, beta=0.35, randbeta=0.5),
}


def paper_config(name: str, **overrides: Any) -> TrialConfig:
    """The published configuration `name` (spec section 7), with overrides."""
    return TrialConfig.from_dict({"setting": "discrete", "activation": "sigm",
                                  **PAPER_EXPERIMENTS[name], **overrides})


_GDU_COMMON: dict[str, Any] = dict(action="gdu", size_tab=(10, 512, 784), activation="tanh",
                                      batch_size=1, lr_tab=(0.00002, 0.00002))
_GDU_DISCRETE: dict[str, Any] = dict(setting="discrete", beta=0.01, T=150, Kmax=10)
_GDU_CONTINUOUS: dict[str, Any] = dict(setting="continuous", no_clamp=True, dt=0.08, beta=0.005, T=800,
                                              Kmax=80)

# the plotcurves command lines of the seed README (spec section 7): Fig. 5(b) is the three continuous
# ep / c-ep / c-vf runs, Appendix E.6 (Figs. 8-15) all eight
GDU_PRESETS: dict[str, dict[str, Any]] = {
    f"{'c-' if continual else ''}{rule}-{setting}": {
        **_GDU_COMMON, **(_GDU_DISCRETE if setting == "discrete" else _GDU_CONTINUOUS),
        "rule": rule, "continual": continual}
    for setting in ("discrete", "continuous") for rule in ("ep", "vf") for continual in (False, True)
}
