"""cep: Continual Equilibrium Propagation (Ernoult et al., 2020), its trainer, analysis and sweeps."""

__version__ = "0.1.0"


def load(path):  # noqa: ANN001, ANN201 (pandas is imported only when called)
    """The pandas DataFrames of an experiment folder: `cep.load("results/NAME").trials` (see cep.frames)."""
    from cep.frames import load as load_frames

    return load_frames(path)
