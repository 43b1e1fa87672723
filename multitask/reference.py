"""Import checkpoints of the public reference code into checkpoint folders of this framework.

Sources (``source=``): ``emcl``, the state dict EMCL-Net's training script saves (``torch.save(
model.state_dict())``: ``clip.*`` in OpenAI's layout, ``frame_position_embeddings.weight`` (77 rows),
``transformerClip.resblocks.N.*`` for seqTransf); ``clip4clip``, CLIP4Clip's ``pytorch_model.bin.N``
(meanP or seqTransf, same key layout, no EMCL); ``emcl_qa``, the state dict of EMCL's video-QA network
(``EMCL4QA``: the same ``clip.*`` and temporal entries plus ``mean_proj``, the pooling weights ``v_w`` /
``t_w``, the projections ``v_proj`` / ``t_proj`` and ``classifier``), which needs the answer of each
classifier output (``answers=``). The folder written holds ``model.safetensors``, ``config.yaml`` and
``meta.json`` (weights only: ``resume`` starts a new run from it at step 0), and ``answers.json`` for QA.
"""
from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from multitask.checkpoint import write_weights_only
from multitask.emcl import reference_init
from multitask.engine import compose_config
from multitask.errors import ConfigError, DataError, MissingInputError
from multitask.pretrained import read_state_dict, upcast
from multitask.task import build_task

logger = logging.getLogger(__name__)

SOURCES = {"emcl": "EMCL-Net (jpthu17/EMCL)", "clip4clip": "CLIP4Clip (ArrowLuo/CLIP4Clip)",
           "emcl_qa": "EMCL-QA (jpthu17/EMCL, video_question_answering)"}
QA_PREFIXES = {"mean_proj.": "backbone.temporal.out_proj.", "v_w.": "video_pool.score.",
               "t_w.": "question_pool.score.", "v_proj.": "classifier.video.", "t_proj.": "classifier.question.",
               "classifier.": "classifier.mlp."}  # EMCL-QA's own modules -> ours (task.network=emcl_qa)
QA_EMCL = {"num_bases": 16, "iters": 5, "beta": 1.0}  # the defaults of EMCL-QA's main.py (K, stage_num, beta)
UNSUPPORTED = {"lstm_visual.": "the seqLSTM temporal module", "cross.": "CLIP4Clip's tightTransf cross encoder",
               "similarity_dense.": "CLIP4Clip's tightTransf cross encoder",
               "clip.visual.conv2.": "CLIP4Clip's 3-D patch embedding (linear_patch=3d)"}
_TEMPORAL_BLOCK = re.compile(r"^transformerClip\.resblocks\.(\d+)\.")


class ReferenceCheckpointError(DataError):
    """A reference checkpoint that does not map onto the modules asked for; the message names every key."""


def _listing(title: str, items: list[str], limit: int = 12) -> str:
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return f"{title}: " + ", ".join(items[:limit]) + more


def _reference_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise MissingInputError(f"reference checkpoint {path} does not exist")
    state = read_state_dict(path)
    if not isinstance(state, dict) or not state:
        raise ReferenceCheckpointError(f"{path} holds no state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from a DDP wrapper
    unsupported = sorted({why for k in state for prefix, why in UNSUPPORTED.items() if k.startswith(prefix)})
    if unsupported:
        raise ReferenceCheckpointError(f"{path} uses {', '.join(unsupported)}, which has no counterpart here "
                                       "(supported: meanP and seqTransf)")
    return upcast(state)


def _count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    """How many numbered blocks ``prefix<N>.`` the state holds."""
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def _architecture(state: dict[str, torch.Tensor], prefix: str = "clip.") -> dict:
    """What a CLIP (the entries under ``prefix``) and the temporal module are, read off their shapes."""
    if f"{prefix}visual.conv1.weight" not in state or f"{prefix}positional_embedding" not in state:
        raise ReferenceCheckpointError("no CLIP weights under clip.* (expected e.g. clip.visual.conv1.weight, "
                                       "clip.positional_embedding): not an EMCL-Net / CLIP4Clip checkpoint")
    conv = state[f"{prefix}visual.conv1.weight"]
    grid = round((state[f"{prefix}visual.positional_embedding"].shape[0] - 1) ** 0.5)
    return {"vision_width": conv.shape[0],
            "vision_layers": _count_blocks(state, f"{prefix}visual.transformer.resblocks."),
            "patch_size": conv.shape[-1], "image_size": conv.shape[-1] * grid,
            "text_width": state[f"{prefix}ln_final.weight"].shape[0],
            "text_layers": _count_blocks(state, f"{prefix}transformer.resblocks."),
            "embed_dim": state[f"{prefix}text_projection"].shape[1],
            "text_positions": state[f"{prefix}positional_embedding"].shape[0],
            "temporal_layers": _count_blocks(state, "transformerClip.resblocks.")}


def _describe(arch: dict) -> str:
    return (f"vision {arch['vision_layers']} x {arch['vision_width']}, patch {arch['patch_size']}, image "
            f"{arch['image_size']} px, text {arch['text_layers']} x {arch['text_width']}, "
            f"embedding {arch['embed_dim']}")


def _check_clip(arch: dict, ours: dict[str, torch.Tensor], clip: str) -> None:
    """A clear error when the checkpoint's CLIP is another architecture than ``--clip``."""
    theirs = {k: v for k, v in arch.items() if k not in ("text_positions", "temporal_layers", "qa")}
    mine = {k: v for k, v in _architecture(ours, "backbone.clip.").items() if k in theirs}
    if theirs != mine:
        raise ReferenceCheckpointError(f"the checkpoint's CLIP ({_describe(arch)}) is not --clip {clip} "
                                       f"({_describe({**mine, 'text_positions': 0})}): pass the CLIP it was trained "
                                       "with (EMCL-Net's --base_encoder ViT-B/32 is ViT-B-32)")


def _our_key(key: str) -> str | None:
    """The name of a reference entry in our task's state dict, or None when it has none."""
    for prefix, ours in QA_PREFIXES.items():
        if key.startswith(prefix):
            return ours + key.removeprefix(prefix)
    if key.startswith("clip."):
        return "backbone." + key
    if key == "frame_position_embeddings.weight":
        return "backbone.temporal.frame_position.weight"
    if _TEMPORAL_BLOCK.match(key):
        return "backbone.temporal.transformer." + key.removeprefix("transformerClip.")
    return None


def _fit(key: str, value: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """``value`` shaped like ``target``: position tables keep their first rows (text positions are cut to
    ``max_words``; frame positions fill the first rows of ours), everything else must match exactly."""
    if value.shape == target.shape:
        return value
    rows_only = value.dim() == 2 and value.shape[1] == target.shape[1]
    if rows_only and key == "clip.positional_embedding" and value.shape[0] >= target.shape[0]:
        return value[: target.shape[0]]
    if rows_only and key == "frame_position_embeddings.weight":
        out = target.clone()
        rows = min(value.shape[0], target.shape[0])
        out[:rows] = value[:rows]
        return out
    return None


def map_state(state: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], clip: str) -> dict[str, torch.Tensor]:
    """Our state dict filled from the reference's; one error naming every unknown, missing or misshapen key."""
    unknown = sorted(k for k in state if _our_key(k) not in ours)
    mapped = {_our_key(k): k for k in state if _our_key(k) in ours}
    wrong = [f"{k} {tuple(state[k].shape)} (ours {tuple(ours[o].shape)})" for o, k in mapped.items()
             if _fit(k, state[k], ours[o]) is None]
    missing = sorted(o for o in ours if o not in mapped and not o.endswith("emcl.mean"))
    problems = [_listing("unknown keys", unknown)] if unknown else []
    problems += [_listing(f"shapes that do not fit --clip {clip}", wrong)] if wrong else []
    problems += [_listing("missing keys (our names)", missing)] if missing else []
    if problems:
        raise ReferenceCheckpointError("the reference checkpoint does not map onto this model:\n  "
                                       + "\n  ".join(problems))
    return {**ours, **{o: _fit(k, state[k], ours[o]) for o, k in mapped.items()}}


def read_emcl_mean(value: object, num_bases: int) -> torch.Tensor:
    """An EMCL running mean from a tensor, array, list, or a .npy / .pt / .safetensors file -> (K,)."""
    if isinstance(value, (str, Path)):
        path = Path(value).expanduser()
        if path.suffix == ".npy":
            value = np.load(path)
        else:
            loaded = read_state_dict(path)
            value = next(iter(loaded.values())) if isinstance(loaded, dict) else loaded
    mean = torch.as_tensor(np.asarray(value, dtype=np.float32)).flatten()
    if mean.numel() != num_bases:
        raise ConfigError(f"the EMCL mean has {mean.numel()} entries; model.emcl.num_bases is {num_bases}")
    return mean


def _overrides(source: str, clip: str, arch: dict, num_frames: int, max_words: int) -> list[str]:
    """Hydra overrides for the config of the imported model (the paper's recipe otherwise)."""
    common = [f"model.clip={clip}", "model.pretrained=null", "model.quick_gelu=true",
              f"model.temporal_layers={arch['temporal_layers'] or 4}", f"data.num_frames={num_frames}",
              f"data.max_words={max_words}", f"data.image_size={arch['image_size']}"]
    if source == "emcl_qa":
        return ["experiment=emcl_msrvtt_qa", *common, "model.temporal=transformer_projected", "task.network=emcl_qa",
                *(f"model.emcl.{k}={v}" for k, v in QA_EMCL.items()), *(f"task.{k}={v}" for k, v in arch["qa"].items())]
    temporal = "transformer" if arch["temporal_layers"] else "mean"
    emcl = source == "emcl"
    return ["experiment=emcl_msrvtt_retrieval", *common, f"model.temporal={temporal}",
            f"model.pooling={'text_conditioned' if emcl else 'mean'}", f"model.emcl.enabled={str(emcl).lower()}"]


def _qa_sizes(state: dict[str, torch.Tensor]) -> dict:
    """EMCL-QA's classifier sizes, read off its shapes, as ``task.*`` settings."""
    needed = ("v_proj.weight", "classifier.0.weight", "classifier.2.weight")
    if any(k not in state for k in needed):
        raise ReferenceCheckpointError(_listing("not an EMCL-QA checkpoint: missing", [k for k in needed
                                                                                        if k not in state]))
    return {"classifier.proj_dim": state["v_proj.weight"].shape[0],
            "classifier.hidden_dim": state["classifier.0.weight"].shape[0],
            "num_answers": state["classifier.2.weight"].shape[0]}


def read_answers(value: object, num_answers: int) -> list[str]:
    """The answer of each classifier output, in order: a list, or a JSON file holding a list or the
    reference's ``ans2label`` dict (answer -> output index)."""
    if value is None:
        raise ConfigError("an EMCL-QA checkpoint needs its answers (answers= / --answers): the answer of each of its "
                          f"{num_answers} classifier outputs, a JSON list or the ans2label dict it was trained with")
    if isinstance(value, (str, Path)):
        value = json.loads(Path(value).expanduser().read_text())
    if isinstance(value, dict):
        value = [a for a, i in sorted(value.items(), key=lambda item: int(item[1])) if int(i) < num_answers]
    answers = [str(a) for a in value]
    if len(answers) != num_answers or len(set(answers)) != len(answers):
        raise ConfigError(f"the checkpoint's classifier has {num_answers} outputs; the answers given are "
                          f"{len(answers)} ({len(set(answers))} distinct)")
    return answers


def import_reference(path: str | Path, out: str | Path, clip: str = "ViT-B-32", source: str = "emcl",
                     emcl_mean: object = None, num_frames: int = 12, max_words: int = 32,
                     answers: object = None) -> Path:
    """Turn a reference checkpoint into a checkpoint folder that ``multitask.load``, ``eval_only`` and
    ``resume`` accept. ``emcl_mean``: the reference's running mean (its checkpoints do not store it); without
    it EMCL starts from a fresh reference initialisation (seed 0). ``answers`` (``emcl_qa`` only): see
    ``read_answers``."""
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
    path, out = Path(path).expanduser(), Path(out).expanduser()
    state = _reference_state(path)
    arch = _architecture(state)
    if source == "emcl_qa":
        arch["qa"] = _qa_sizes(state)
        answers = read_answers(answers, arch["qa"]["num_answers"])
    if max_words > arch["text_positions"]:
        raise ConfigError(f"max_words={max_words} exceeds the checkpoint's {arch['text_positions']} text positions")
    with tempfile.TemporaryDirectory() as tmp:
        overrides = _overrides(source, clip, arch, num_frames, max_words)
        if source == "emcl_qa":
            (Path(tmp) / "answers.json").write_text(json.dumps(answers))
            overrides.append(f"task.answers_file={Path(tmp) / 'answers.json'}")
        conf = compose_config(overrides)
        try:
            task = build_task(conf)
        except ValueError as err:
            raise ReferenceCheckpointError(f"--clip {clip}: {err}") from err
    if source == "emcl_qa":
        conf["task"]["answers_file"] = None  # the folder holds them (answers.json)
    _check_clip(arch, task.state_dict(), clip)
    try:
        mapped = map_state(state, task.state_dict(), clip)
    except ReferenceCheckpointError as err:
        raise ReferenceCheckpointError(f"{path} ({SOURCES[source]}; {_describe(arch)}): {err}") from err
    if conf["model"]["emcl"]["enabled"]:
        mapped["emcl.mean"] = _emcl_mean(emcl_mean, conf["model"]["emcl"]["num_bases"])
    task.load_state_dict(mapped, strict=True)
    write_weights_only(task, conf, out, {"imported_from": str(path.resolve()), "source": source})
    logger.info("imported %s into %s", path, out)
    return out


def _emcl_mean(value: object, num_bases: int) -> torch.Tensor:
    if value is not None:
        return read_emcl_mean(value, num_bases)
    logger.warning("no EMCL mean given: reference checkpoints do not store it, so EMCL starts from a fresh "
                   "reference initialisation and evaluation will differ from the reference run's (pass emcl_mean)")
    return reference_init(num_bases, torch.Generator().manual_seed(0))
