"""Sweeps: a YAML file of trials (spec), its experiment folder (store), Ray Tune (driver, progress), `cep-sweep` (cli).

Only `driver` and `progress` import Ray; the rest reads and writes plain files.
"""
