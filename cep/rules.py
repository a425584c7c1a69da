"""The learning rules of spec section 4.5 and debug-cep (section 5): the nudged phase and the weight update.

EP, C-EP, VF and C-VF differ in two switches only: whether the weights move after
every nudged step (continual) and whether the update is the end-to-end EP
difference (ep, frozen) or the sum of per-step increments (vf, frozen).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from cep.config import TrialConfig
from cep.engine import nudged_learn
from cep.model import (
    Increment,
    Params,
    Scalar,
    States,
    apply_increment,
    apply_input_update,
    increment,
    input_drive,
    step,
    synaptic,
    update_drive,
)

# called after every nudged step k = 1..Kmax with (k, previous states, new states, ds, increment)
StepHook = Callable[[int, States, States, "States | None", Increment], None]

DEBUG_CEP_SCALE = 1e-5  # Appendix F.2: the tiny learning rates of the debugging procedure


def nudged_phase(cfg: TrialConfig, p: Params, s_free: States, x: Tensor, y: Tensor, beta: Scalar,
                 lrs: Sequence[Scalar] | None = None, accumulate: bool = False,
                 on_step: StepHook | None = None) -> tuple[States, Increment | None]:
    """Run Kmax nudged steps from the free equilibrium.

    With `lrs`, every per-step increment is applied immediately (continual rules).
    The input matrix W_{L-1} acts on the dynamics only through the input drive,
    which follows it exactly through the batch Gram matrix (spec section 8); so
    its per-step updates are summed in factored form and written once, at the
    end, instead of rewriting the 784-wide matrix at every step.
    With `accumulate`, the sum of the per-step increments is returned.
    """
    x_syn = synaptic(cfg, x)
    drive = input_drive(cfg, p, x)
    gram = x_syn @ x_syn.mT if lrs is not None else None
    s, total, d_in_sum = s_free, None, None
    for k in range(1, cfg.Kmax + 1):
        new, ds = step(cfg, p, s, drive, beta, y)
        if lrs is not None or accumulate or on_step is not None:
            inc = increment(cfg, new, s, x_syn, beta)
            if on_step is not None:
                on_step(k, s, new, ds, inc)
            if lrs is not None:
                apply_increment(p, inc, lrs, input_weight=False)
                drive = update_drive(drive, gram, inc, lrs[-1])
                d_in_sum = inc.d_in.clone() if d_in_sum is None else d_in_sum.add_(inc.d_in)
            if accumulate:
                if total is None:
                    total = inc
                else:
                    total.add_(inc)
        s = new
    if d_in_sum is not None:
        apply_input_update(p, d_in_sum, x_syn, lrs[-1])
    return s, total


def learn(cfg: TrialConfig, p: Params, s_free: States, x: Tensor, y: Tensor, beta: Scalar,
          lrs: Sequence[Scalar]) -> States:
    """Second phase plus weight update of one minibatch, in place on `p`; returns the nudged end state.

    Runs the fused step of cep.engine. debug-cep (spec 5) moves the weights at 1e-5 lr during
    the phase and never writes those tiny updates (the engine writes ep updates once, at the end),
    then applies the per-step increments' sum, ΔW(s(K), s(0)) for ep, with the full lr.
    """
    if cfg.debug_cep:
        dynamics = [lr * DEBUG_CEP_SCALE for lr in lrs]
    else:
        dynamics = list(lrs) if cfg.continual else None
    return nudged_learn(cfg, p, s_free, x, y, beta, lrs, dynamics)
