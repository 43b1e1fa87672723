"""The EMCL bridge: Expectation-Maximization Contrastive Learning (Jin et al., NeurIPS 2022, Algorithm 1).

Pure tensor code. Rows of the input are samples (videos and texts stacked), columns are feature
dimensions. The EM iterations find K bases shared by both modalities; the output adds the
low-rank reconstruction of every row (scaled by ``beta``) to the input.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-6


def reference_init(num_bases: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Initial value of M as the public reference computes it.

    The reference draws ``normal(0, sqrt(2/K))`` into a (1, K) tensor and normalises over the
    dimension of size one, so every entry becomes ``x / (1e-6 + |x|)``: M starts at (almost
    exactly) +-1 with random signs, not at a small Gaussian. Kept as the default for fidelity.
    """
    mean = torch.empty(num_bases).normal_(0.0, math.sqrt(2.0 / num_bases), generator=generator)
    return mean / (_EPS + mean.abs())


def em_iterations(x: torch.Tensor, init: torch.Tensor, iters: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the EM loop without gradient. x: (N, D) or a batch of independent sets (G, N, D); init: (K,).
    Returns lambda (..., N, K), Y (..., D, K)."""
    with torch.no_grad():
        lam = init.to(x).expand(*x.shape[:-1], -1)  # (..., N, K)
        y = x.new_zeros(*x.shape[:-2], x.shape[-1], init.shape[0])  # (..., D, K), replaced in the first iteration
        for _ in range(iters):
            y = F.softmax(x.transpose(-1, -2) @ lam / sigma, dim=-1)  # (..., D, K): E step, over bases
            y = y / (_EPS + y.sum(dim=-2, keepdim=True))  # each column sums to 1 over D
            lam = x @ y  # (..., N, K): M step
            lam = lam / (_EPS + lam.norm(dim=-2, keepdim=True))  # unit L2 norm per column over N
    return lam, y


class EMCL(nn.Module):
    """Re-express features on ``num_bases`` shared bases (Algorithm 1).

    ``mean`` is the running initial value M of lambda, a buffer so that it is saved and restored
    with checkpoints (the reference keeps it outside the module and loses it on reload). In
    training mode every call updates ``M <- momentum * M + (1 - momentum) * lambda.mean(0)``
    after computing its output with the old M; in eval mode M is untouched. The EM loop always
    runs in float32 without gradient, so gradient reaches the input only through the residual.
    """

    def __init__(self, num_bases: int = 32, iters: int = 9, momentum: float = 0.9, sigma: float = 1.0,
                 beta: float = 3.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if num_bases < 1 or iters < 1:
            raise ValueError(f"EMCL needs num_bases >= 1 and iters >= 1, got {num_bases} and {iters}")
        self.num_bases, self.iters, self.momentum = num_bases, iters, momentum
        self.sigma, self.beta = sigma, beta
        self.register_buffer("mean", reference_init(num_bases, generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, D) -> (N, D) in x's dtype."""
        if x.dim() != 2:
            raise ValueError(f"EMCL expects a 2-D (samples, dims) tensor, got shape {tuple(x.shape)} "
                             "(for a batch of independent sets in eval mode, use EMCL.forward_sets)")
        lam, out = self._reconstruct(x)
        if self.training:
            with torch.no_grad():
                self.mean.mul_(self.momentum).add_(lam.mean(dim=0), alpha=1.0 - self.momentum)
        return out

    def joint(self, *parts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """EMCL on the rows of ``parts`` stacked (e.g. videos (V, D) and texts (A, D)), split back into parts."""
        out = self(torch.cat(parts))  # (sum of rows, D)
        return tuple(out.split([p.shape[0] for p in parts]))

    def forward_sets(self, x: torch.Tensor) -> torch.Tensor:
        """x: (G, N, D), G independent sets in one batched call (evaluation's blocks), each as ``forward``
        treats it in eval mode; M is not updated, so this is for eval mode only."""
        if x.dim() != 3 or self.training:
            raise ValueError(f"EMCL.forward_sets expects a 3-D (sets, samples, dims) tensor in eval mode, got shape "
                             f"{tuple(x.shape)} in {'training' if self.training else 'eval'} mode")
        return self._reconstruct(x)[1]

    def _reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(lambda (..., N, K) in float32, the output (..., N, D) in x's dtype)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x32 = x.float()
            lam, y = em_iterations(x32.detach(), self.mean, self.iters, self.sigma)
            out = self.beta * (lam @ y.transpose(-1, -2)) + x32  # (..., N, D)
        return lam, out.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"num_bases={self.num_bases}, iters={self.iters}, momentum={self.momentum}, "
                f"sigma={self.sigma}, beta={self.beta}")


def build_emcl(emcl_cfg: dict) -> EMCL | None:
    """EMCL from ``model.emcl``, or None when ``enabled`` is false (the paper's base model)."""
    if not emcl_cfg["enabled"]:
        return None
    return EMCL(**{k: v for k, v in emcl_cfg.items() if k != "enabled"})


def emcl_similarity(text: torch.Tensor, video: torch.Tensor, seed: int = 0, **emcl_kwargs: float) -> torch.Tensor:
    """Out-of-the-box EMCL (paper Table 2, no training) on embeddings from any model.

    text: (T, D), video: (V, D). L2-normalises both, stacks [video; text], applies a freshly
    initialised EMCL (M drawn with ``seed``) in eval mode, re-normalises the reconstructed rows and
    returns the cosine similarity (T, V).
    """
    if text.dim() != 2 or video.dim() != 2 or text.shape[1] != video.shape[1]:
        raise ValueError(f"expected text (T, D) and video (V, D), got {tuple(text.shape)} and {tuple(video.shape)}")
    generator = torch.Generator().manual_seed(seed)
    emcl = EMCL(generator=generator, **emcl_kwargs).eval().to(text.device)
    stacked = torch.cat([F.normalize(video.float(), dim=-1), F.normalize(text.float(), dim=-1)])  # (V+T, D)
    out = emcl(stacked)
    video_out, text_out = F.normalize(out[: video.shape[0]], dim=-1), F.normalize(out[video.shape[0]:], dim=-1)
    return text_out @ video_out.t()  # (T, V)
