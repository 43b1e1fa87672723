"""A decoder module (``data.decoder=fake_decoders``) that misbehaves on chosen videos, named in the environment:
``EMCL_FAKE_BAD="video3=load:hang,video5=load:crash,video7=load:fail,video9=probe:hang"``. At that stage
(``probe``: the quick check; ``load``: reading frames, in training, evaluation or a full decode) ``hang``
sleeps past any time limit, ``crash`` kills the process it runs in (as a segfault in native code would),
``fail`` raises as a file damaged between its first and last frame does. Every other video decodes for real."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from multitask import video_io as video


def _misbehave(path: str, stage: str) -> None:
    faults = dict(item.split("=") for item in os.environ.get("EMCL_FAKE_BAD", "").split(",") if item)
    fault_stage, _, kind = faults.get(Path(path).stem, ":").partition(":")
    if fault_stage != stage:
        return
    if kind == "hang":
        time.sleep(3600)
    if kind == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if kind == "fail":
        raise RuntimeError(f"corrupt macroblock in {Path(path).name}")


def probe_video(path: str) -> video.VideoInfo | str:
    _misbehave(path, "probe")
    return video.probe_video(path)


def read_frames(path: str, indices: list[int], height: int, width: int):
    _misbehave(path, "load")
    return video.read_frames(path, indices, height, width)


def decode_all_frames(path: str) -> int:
    _misbehave(path, "load")
    return video.decode_all_frames(path)
