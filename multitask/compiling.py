"""``trainer.compile``: ``torch.compile`` of the backbone's transformer blocks, in place.

Regional compilation (the PyTorch recipe, and what Accelerate's ``use_regional_compilation`` does): every
block of every list of identical blocks (the image and text towers' residual attention blocks, the frame
transformer's) is compiled on its own, so identical blocks share one compiled graph and the first step
compiles a few small graphs instead of the whole network. The rest (tokenisation, the gathers, EMCL, the
similarity and the heads) stays eager: it is a small share of the FLOPs and full of Python a graph breaks on.

In place (``nn.Module.compile``): the module tree and its names do not change, so state dicts and checkpoints
are the same with and without compile (``torch.compile(model)`` wraps modules, and every key of a wrapped
module gains an ``_orig_mod.`` prefix that an eager model cannot load).
"""
from __future__ import annotations

from torch import nn


def repeated_blocks(module: nn.Module) -> dict[str, nn.Module]:
    """Name -> block for every child of a ``ModuleList`` whose children are all of one class (outermost lists
    only: a list inside such a block is compiled with its block)."""
    blocks: dict[str, nn.Module] = {}
    for name, child in module.named_modules():
        inside = any(name.startswith(f"{block}.") for block in blocks)
        if isinstance(child, nn.ModuleList) and len(child) and len({type(b) for b in child}) == 1 and not inside:
            blocks.update({f"{name}.{i}" if name else str(i): block for i, block in enumerate(child)})
    return blocks


def compile_blocks(module: nn.Module, **compile_kwargs) -> list[str]:
    """Compile every repeated block of ``module`` in place (``compile_kwargs`` go to ``torch.compile``: the
    default backend is inductor); returns the compiled blocks' names."""
    blocks = repeated_blocks(module)
    for block in blocks.values():
        block.compile(**compile_kwargs)
    return list(blocks)
