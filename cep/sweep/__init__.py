"""Sweeps: a YAML file of trials (spec, sections), packs and cost (plan), the experiment folder (store, guard,
lock; its layout: cep.layout), Ray Tune (driver, trainable, progress, gpu_preflight), `cep-sweep` (cli, local, status).

Only driver, trainable, progress and gpu_preflight import Ray; the rest reads and writes plain files.
"""
