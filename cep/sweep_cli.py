"""`cep-sweep`: placeholder until the sweep orchestrator lands."""

import sys


def main() -> None:
    print("cep-sweep: sweeps arrive in a later change; train one trial with `cep train`.", file=sys.stderr)
    sys.exit(2)
