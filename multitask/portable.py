"""``multitask export``: a checkpoint as a portable model folder, and its upload to the Hugging Face Hub.

The folder is a weights-only checkpoint folder (``checkpoint.write_weights_only``: ``model.safetensors`` without
optimizer state, ``config.yaml``, the tokenizer or answer vocabulary, ``meta.json``) plus a ``README.md`` model
card: ``multitask.load``, every ``multitask`` command, ``eval_only=true checkpoint=DIR`` and ``resume=DIR`` (a new
run from step 0) take it as they take the checkpoint.
"""
from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

from multitask.checkpoint import latest, restore, write_weights_only
from multitask.errors import ConfigError
from multitask.files import atomic_path
from multitask.metrics import format_table

logger = logging.getLogger(__name__)

CARD = "README.md"


def folder_size(folder: Path) -> int:
    """Bytes of the files under ``folder`` (links followed once: ``checkpoints/last`` counts its target)."""
    return sum(p.stat().st_size for p in Path(folder).resolve().rglob("*") if p.is_file())


def _run_dir(checkpoint: Path) -> Path | None:
    """The run directory of a ``{output_dir}/checkpoints/step_N`` folder (None for an imported or exported one)."""
    folder = checkpoint.resolve()
    return folder.parents[1] if folder.parent.name == "checkpoints" else None


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def training_command(environment: dict | None) -> str | None:
    """The command line of the run, as its ``environment.json`` recorded it (None when it did not)."""
    if not environment or not environment.get("argv"):
        return None
    processes = environment.get("num_processes", 1)
    launcher = "python" if processes == 1 else f"accelerate launch --multi_gpu --num_processes {processes}"
    return f"{launcher} {shlex.join(environment['argv'])}"


def _evaluation(checkpoint: Path, run: Path | None) -> str:
    """The run's eval.json as a table, when it evaluates this very checkpoint (the run's newest)."""
    report = _read_json(run / "eval.json") if run else None
    if report is None:
        return "No evaluation recorded: the run directory of this checkpoint has no eval.json."
    newest = latest(run / "checkpoints")
    if newest is None or newest.resolve() != checkpoint.resolve():
        return (f"Not this checkpoint's: {run / 'eval.json'} evaluates the run's final checkpoint "
                f"({newest.name if newest else 'none left'}), and this is {checkpoint.resolve().name}.")
    return (f"From the run's eval.json: split `{report['split']}`, {report['num_samples']} samples scored.\n\n"
            f"```\n{format_table(report['metrics'])}\n```")


def model_card(conf: dict, serves: tuple[str, ...], trained_steps: int, checkpoint: Path, num_parameters: int,
               name: str) -> str:
    """README.md of an exported folder: what the model does (the heads it ``serves``), on what it was trained, its
    metrics, the command."""
    task, model, data = conf["task"]["name"], conf["model"], conf["data"]
    run = _run_dir(checkpoint)
    command = training_command(_read_json(run / "environment.json") if run else None)
    emcl, source = model["emcl"], data.get("root") or data.get("shards")  # data=shards has shard patterns
    bridge = f"EMCL with {emcl['num_bases']} bases, {emcl['iters']} iterations" if emcl["enabled"] else "no EMCL"
    steps = f"trained {trained_steps} step{'s' * (trained_steps != 1)}" if trained_steps else \
        "imported weights (no training steps recorded)"
    return f"""---
library_name: emcl-multitask
tags: [emcl, open_clip, video-text, {task}]
---
# EMCL {task} model

Heads: {', '.join(serves)}; an open_clip `{model['clip']}` backbone ({model['temporal']} temporal module,
{model['pooling']} pooling), {bridge}; {num_parameters / 1e6:.2f} M parameters, {steps}.

Data: `data={data['name']}` at `{source}`, {data['num_frames']} frames of {data['image_size']} px per clip,
captions and questions up to {data['max_words']} tokens.

## Evaluation

{_evaluation(checkpoint, run)}

## Training command (the run's last start)

```bash
{command or "# not recorded (the run predates environment.json's argv); config.yaml holds the resolved config"}
```

## Use

```python
import multitask
model = multitask.load("{name}")  # from the Hub: huggingface_hub.snapshot_download("<repo>") gives the folder
```

```bash
python train.py task={task} eval_only=true checkpoint={name} data.root=...  # evaluate on your data
python train.py task={task} resume={name} data.root=...  # fine-tune: a new run from step 0
```

Files: `model.safetensors` (weights, no optimizer state), `config.yaml` (the resolved training config),
`meta.json`, and the tokenizer (`tokenizer.model`) or answer vocabulary (`answers.json`) where the task has one.
"""


def require_login() -> None:
    """Stop before any work when there is no Hugging Face token to upload with."""
    from huggingface_hub import get_token

    if get_token() is None:
        raise ConfigError("--push-to-hub needs a Hugging Face login: run `hf auth login` (or set HF_TOKEN) first")


def upload(folder: Path, repo_id: str, private: bool = False) -> str:
    """Upload ``folder`` to the Hub model repository ``repo_id`` (created if missing); its URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder),
                      commit_message=f"multitask export of {folder.name}")
    return str(url)


def export(checkpoint: str | Path, out: str | Path, push_to_hub: str | None = None, private: bool = False) -> Path:
    """Write the model of ``checkpoint`` (any checkpoint folder ``multitask.load`` takes) into the new folder
    ``out``; with ``push_to_hub`` (a Hub repository id), upload it there too (``private``: a private repository)."""
    checkpoint, out = Path(checkpoint).expanduser(), Path(out).expanduser()
    if push_to_hub:
        require_login()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder: export into a new one")
    restored = restore(checkpoint)
    steps = restored.meta.get("trained_steps", restored.meta["step"])  # an exported folder keeps its count
    num_parameters = sum(p.numel() for p in restored.task.parameters())
    with atomic_path(out) as tmp:  # a finished folder or none (an empty one is replaced)
        write_weights_only(restored.task, restored.conf, tmp,
                           {"exported_from": str(checkpoint.resolve()), "trained_steps": steps})
        (tmp / CARD).write_text(model_card(restored.conf, restored.task.serves, steps, checkpoint, num_parameters,
                                           out.name))
    logger.info("exported %s to %s", checkpoint, out)
    if push_to_hub:
        logger.info("uploaded to %s", upload(out, push_to_hub, private))
    return out
