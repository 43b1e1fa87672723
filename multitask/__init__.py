"""EMCL multi-task framework: one CLIP backbone and one EMCL bridge for retrieval, captioning and QA."""
from __future__ import annotations


def load(checkpoint, device=None):
    """Rebuild a trained model from a checkpoint folder; see ``multitask.api.load``."""
    from multitask.api import load as _load

    return _load(checkpoint, device)
