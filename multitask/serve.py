"""``multitask serve INDEX``: a local search page over an index folder (FastAPI + uvicorn).

    GET  /                      the page (multitask/static/search.html)
    GET  /api/info              {"videos", "checkpoint", "heads": {"caption": note or null, "qa": note or null}}
    GET  /api/search?q=&k=      {"results": [{"rank", "clip", "id", "name", "score"}]}: ``Model.search``
    GET  /api/strip/{clip}.jpg  a strip of a few frames of the clip (decoded in the isolated decoder process)
    GET  /api/caption/{clip}    {"caption"}
    POST /api/answer            {"clip", "question"} -> {"answer"}

``clip`` is the position of a video in the index. A head the checkpoint lacks answers 409 with a note the
page shows in its place. Model and decoder calls are serialised by one lock: the page is for one person.
"""
from __future__ import annotations

import functools
import io
import socket
import threading
from importlib.resources import files
from pathlib import Path

import faiss
import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, Response
from PIL import Image
from pydantic import BaseModel

from multitask.api import Model
from multitask.decoding import DecodeError, process_decoder
from multitask.errors import UserError
from multitask.search_index import SearchIndex
from multitask.video import decode_frames
from multitask.video_io import VideoInfo

STRIP_FRAMES, STRIP_HEIGHT = 4, 72


class Question(BaseModel):
    clip: int
    question: str


def head_notes(model: Model) -> dict[str, str | None]:
    """For the caption and QA heads: None when the checkpoint has the head, else what the page says instead."""
    notes: dict[str, str | None] = {}
    for head in ("caption", "qa"):
        try:
            model.task.serving(head)
            notes[head] = None
        except ValueError:
            notes[head] = (f"This checkpoint (task={model.task_name}) has no {head} head: use one trained with "
                           f"task={head} or task=multi for {'captions' if head == 'caption' else 'answers'}.")
    return notes


def frame_strip(path: str, model: Model, frames: int = STRIP_FRAMES, height: int = STRIP_HEIGHT) -> bytes:
    """JPEG of ``frames`` frames sampled uniformly over the video, side by side, ``height`` pixels high (or the
    video's own height when smaller)."""
    decoder = process_decoder(model.decoder)
    info = decoder.call("probe_video", path)
    if not isinstance(info, VideoInfo):
        raise DecodeError(info)
    short_side = min(height, info.height, info.width)  # decord cannot enlarge
    raw = decode_frames(path, info, frames, short_side, decoder=decoder)  # (t, h, w, 3) uint8
    image = Image.fromarray(np.concatenate(list(raw), axis=1))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def create_app(model: Model, index: SearchIndex, rerank: int) -> FastAPI:
    """The page and its JSON routes over ``index``, searched and described with ``model``."""
    app, lock, notes = FastAPI(title="multitask search"), threading.Lock(), head_notes(model)
    position = {video: k for k, video in enumerate(index.ids)}

    def clip_path(clip: int) -> str:
        if not 0 <= clip < len(index.ids):
            raise HTTPException(404, f"no clip {clip} in the index")
        return index.entries[clip]["path"]

    def needs(head: str) -> None:
        if notes[head] is not None:
            raise HTTPException(409, notes[head])

    @functools.lru_cache(maxsize=512)
    def strip(clip: int) -> bytes:
        return frame_strip(clip_path(clip), model)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return files("multitask").joinpath("static/search.html").read_text(encoding="utf-8")

    @app.get("/api/info")
    def info() -> dict:
        return {"videos": len(index.ids), "checkpoint": str(model.checkpoint), "heads": notes}

    @app.get("/api/search")
    def search(q: str = Query(min_length=1), k: int = Query(10, ge=1, le=100)) -> dict:
        with lock:
            try:
                found = model.search(q, k, index, rerank)
            except UserError as err:
                raise HTTPException(400, str(err)) from err
        return {"results": [{"rank": r, "clip": position[v], "id": v, "score": s,
                             "name": Path(index.entries[position[v]]["path"]).name}
                            for r, (v, s) in enumerate(found, 1)]}

    @app.get("/api/strip/{clip}.jpg")
    def strip_image(clip: int) -> Response:
        with lock:
            try:
                return Response(strip(clip), media_type="image/jpeg")
            except DecodeError as err:
                raise HTTPException(422, f"cannot decode {clip_path(clip)}: {err}") from err

    @app.get("/api/caption/{clip}")
    def caption(clip: int) -> dict:
        needs("caption")
        with lock:
            return {"caption": _described(lambda: model.caption([clip_path(clip)])[0])}

    @app.post("/api/answer")
    def answer(body: Question) -> dict:
        needs("qa")
        if not body.question.strip():
            raise HTTPException(422, "ask a question")
        with lock:
            return {"answer": _described(lambda: model.answer(clip_path(body.clip), body.question))}

    return app


def _described(call):
    """``call()``, with the reason of a video that cannot be read (moved, damaged) as a 422 for the page."""
    try:
        return call()
    except UserError as err:
        raise HTTPException(422, str(err)) from err


def bind(model: Model, index: SearchIndex, host: str, port: int, rerank: int) -> tuple[uvicorn.Server, socket.socket,
                                                                                    str]:
    """(a server of the page, the socket it is to serve on, bound to ``host:port`` (0: any free port), its address)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    address = f"http://{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}/"
    return uvicorn.Server(uvicorn.Config(create_app(model, index, rerank), log_level="warning")), sock, address


def serve(model: Model, index: SearchIndex, host: str, port: int, rerank: int) -> None:
    """Serve the page on ``host:port``, print the address, go on until interrupted. Requests run one at a time on
    one thread: a query's work is small, and on a busy machine more threads mostly wait for each other (the EMCL
    re-ranking of 200 candidates: 4 ms on one thread, 150-600 ms on two)."""
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    server, sock, address = bind(model, index, host, port, rerank)
    print(f"serving {index.folder} ({len(index.ids)} videos) at {address}", flush=True)
    server.run(sockets=[sock])
