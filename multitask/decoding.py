"""Video decoding isolated in a child process: a per-video time limit, a decoder crash that takes only the
child, and native decoder logs kept off the console.

Every probe and clip load of the framework goes through a ``Decoder``: a child process
(``python -m multitask.decoding``) that runs the in-process functions of a decoder module
(``data.decoder``, by default ``multitask.video_io``: ``probe_video``, ``read_frames``,
``decode_all_frames``) and sends back their results. A call that takes longer than
``timeout_s`` kills the child ("timeout after N s"); a child that dies (a segfault in native code) is
reported ("decoder crashed (signal N)"); either way the next call starts a fresh child. The child's
stdout and stderr go to /dev/null, so libavcodec's per-macroblock complaints never reach the user;
the reason recorded for a bad file is the decoder's exception.
"""
from __future__ import annotations

import atexit
import importlib
import os
import pickle
import queue
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from tqdm.auto import tqdm

from multitask.errors import ConfigError, DataError
from multitask.video_io import UnreadableVideoError, VideoInfo, error_summary

_HEADER = struct.Struct("<Q")
STARTUP_S = 60.0  # for a child to import its decoder module


class DecodeError(DataError):
    """A video that could not be decoded; the message is the reason."""


@dataclass(frozen=True)
class DecoderSpec:
    """Which decoder module to run, and the time limit per call (``data.decoder``, ``data.decode_timeout_s``)."""
    module: str
    timeout_s: float


class Decoder:
    """One child process running the decoder module's functions, restarted after a timeout or a crash."""

    def __init__(self, spec: DecoderSpec) -> None:
        self.spec, self.proc = spec, None

    def _start(self) -> subprocess.Popen:
        """A child that has imported the decoder module (its start-up does not count against the time limit)."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # the parent's imports
        proc = subprocess.Popen([sys.executable, "-m", "multitask.decoding", self.spec.module], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            status, value = _receive(proc.stdout, max(STARTUP_S, self.spec.timeout_s))
        except (TimeoutError, EOFError, OSError):
            status, value = "unusable", f"the decoder process (data.decoder={self.spec.module}) did not start"
        if status != "ready":
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise ConfigError(value)
        return proc

    def call(self, function: str, *args):
        """``function(*args)`` in the child; raises DecodeError with the reason when it fails, hangs or crashes."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        try:
            _send(self.proc.stdin, (function, args))
            status, value = _receive(self.proc.stdout, self.spec.timeout_s)
        except TimeoutError:
            self.close()
            raise DecodeError(f"timeout after {self.spec.timeout_s:g} s") from None
        except (EOFError, BrokenPipeError, OSError):
            code = self.proc.wait()
            self.proc = None
            raise DecodeError(f"decoder crashed ({_describe_exit(code)})") from None
        if status == "error":
            raise DecodeError(value)
        return value

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None


def _describe_exit(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"exit code {code}"


def _send(stream, payload) -> None:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exactly(stream, size: int, deadline: float | None) -> bytes:
    chunks, left = [], size
    fd = stream.fileno()
    while left:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive(stream, timeout_s: float | None):
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    (size,) = _HEADER.unpack(_read_exactly(stream, _HEADER.size, deadline))
    return pickle.loads(_read_exactly(stream, size, deadline))


_PER_PROCESS: dict[tuple[int, DecoderSpec], Decoder] = {}


def process_decoder(spec: DecoderSpec) -> Decoder:
    """This process's decoder for ``spec`` (each DataLoader worker gets its own child)."""
    key = (os.getpid(), spec)
    if key not in _PER_PROCESS:
        _PER_PROCESS[key] = Decoder(spec)
    return _PER_PROCESS[key]


@atexit.register
def _close_all() -> None:
    for found in _PER_PROCESS.values():
        found.close()


def iter_decoded(function: str, calls: list[tuple], spec: DecoderSpec, workers: int = 4,
                 show_progress: bool = True, desc: str = "checking videos") -> Iterator[tuple[int, object]]:
    """``function(*args)`` of the decoder module for every ``args`` of ``calls``, in ``workers`` children at
    once, with a progress bar: (position in ``calls``, the result, or the reason (a string) it failed, hung
    or crashed), in the order they finish. A decoder module that cannot be imported raises ConfigError."""
    idle: queue.Queue[Decoder] = queue.Queue()
    for _ in range(max(1, min(workers, len(calls)))):
        idle.put(Decoder(spec))

    def run(args: tuple) -> object:
        child = idle.get()
        try:
            return child.call(function, *args)
        except DecodeError as err:
            return str(err)
        finally:
            idle.put(child)

    try:
        with ThreadPoolExecutor(max_workers=idle.qsize()) as pool:
            futures = {pool.submit(run, args): k for k, args in enumerate(calls)}
            for future in tqdm(as_completed(futures), total=len(futures), desc=desc, disable=not show_progress,
                               leave=False):
                yield futures[future], future.result()
    finally:
        while not idle.empty():
            idle.get().close()


def map_decoded(function: str, paths: list[str], spec: DecoderSpec, workers: int = 4, show_progress: bool = True,
                desc: str = "checking videos") -> dict[str, object]:
    """``iter_decoded`` of ``function(path)`` for every path: {path: result or reason}."""
    results = dict(iter_decoded(function, [(p,) for p in paths], spec, workers, show_progress, desc))
    return {path: results[k] for k, path in enumerate(paths)}


def probe_all(paths: list[str], spec: DecoderSpec, show_progress: bool = False) -> tuple[dict[str, VideoInfo],
                                                                                       dict[str, str]]:
    """(info of readable videos, reason for each unreadable one)."""
    results = map_decoded("probe_video", paths, spec, show_progress=show_progress)
    return ({p: r for p, r in results.items() if isinstance(r, VideoInfo)},
            {p: r for p, r in results.items() if not isinstance(r, VideoInfo)})


def require_readable(paths: list[str], spec: DecoderSpec) -> dict[str, VideoInfo]:
    if not paths:
        raise ConfigError("no video paths given")
    good, bad = probe_all(paths, spec)
    if bad:
        raise UnreadableVideoError(bad, len(paths))
    return good


def _serve(module_name: str) -> None:
    """The child: read (function, args) requests on stdin, answer ("ok", result) or ("error", reason)."""
    channel_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # native code that prints to stdout must not corrupt the channel
    channel_in = sys.stdin.buffer
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # a wrong data.decoder
        _send(channel_out, ("unusable", f"data.decoder={module_name} cannot be imported ({error_summary(err)})"))
        return
    _send(channel_out, ("ready", None))
    while True:
        try:
            function, args = _receive(channel_in, None)
        except EOFError:
            return
        try:
            answer = ("ok", getattr(module, function)(*args))
        except Exception as err:  # decoders raise their own error types
            answer = ("error", error_summary(err))
        _send(channel_out, answer)


if __name__ == "__main__":
    _serve(sys.argv[1])
