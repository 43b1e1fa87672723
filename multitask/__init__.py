"""EMCL multi-task framework: one CLIP backbone and one EMCL bridge for retrieval, captioning and QA."""
from __future__ import annotations


def load(checkpoint, device=None, reference_compat=None):
    """Rebuild a trained model from a checkpoint folder; see ``multitask.api.load``."""
    from multitask.api import load as _load

    return _load(checkpoint, device, reference_compat)


def import_reference(path, out, clip="ViT-B-32", **kwargs):
    """Turn an EMCL-Net or CLIP4Clip checkpoint into a checkpoint folder; see ``multitask.reference``."""
    from multitask.reference import import_reference as _import

    return _import(path, out, clip=clip, **kwargs)


def export(checkpoint, out, push_to_hub=None, private=False):
    """Write a checkpoint's model as a portable folder (and upload it); see ``multitask.portable.export``."""
    from multitask.portable import export as _export

    return _export(checkpoint, out, push_to_hub=push_to_hub, private=private)
