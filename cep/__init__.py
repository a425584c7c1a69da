"""cep: Continual Equilibrium Propagation (Ernoult et al., 2020), its trainer, analysis and sweeps."""

__version__ = "0.1.0"
