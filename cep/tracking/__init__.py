"""Mirrors of trial folders in TensorBoard, MLflow and Weights & Biases: one run per trial, each epoch once.

The trial folder is the truth; a tracker only ever receives what the folder holds, and nothing a tracker
says is read back into training (cep.tracking.mirror)."""
