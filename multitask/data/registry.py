"""Map ``data.name`` and ``task.name`` to prepared datasets (plain-dict registries).

``data.name`` decides how the data root is prepared (checked, or generated for ``synthetic``) and which
file layout it holds (``synthetic`` writes the layout named by ``data.layout``); the task decides which
annotations of that layout are read. MSR-VTT roots serve retrieval (9k / 1k-A), captioning (the
``split`` field) and MSRVTT-QA; ActivityNet, LSMDC, MSVD and DiDeMo serve retrieval.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

import datasets

from multitask.data import activitynet, didemo, lsmdc, msrvtt, msrvtt_qa, msvd
from multitask.data.checks import check_videos
from multitask.data.feature_cache import open_feature_cache
from multitask.data.frame_cache import StoredClips, open_frame_cache
from multitask.data.multi import MultiTaskDataset
from multitask.data.shards import check_sources, parse_shards
from multitask.data.stream import ClipSettings, ShardStream
from multitask.data.tables import cache_dir
from multitask.data.video_index import index_videos, indexed_path, outside
from multitask.data.video_text import Loading, QADataset, VideoDataset, VideoTextDataset
from multitask.decoding import DecoderSpec
from multitask.errors import ConfigError, DataError, MissingInputError
from multitask.types import TaskData

logger = logging.getLogger(__name__)


def _existing_root(cfg: dict, show_progress: bool) -> Path:
    root = Path(cfg["root"]).expanduser()
    if not root.is_dir():
        raise MissingInputError(f"data.root={root} does not exist; see the README for the {cfg['name']} layout")
    return root


def _prepare_synthetic(cfg: dict, show_progress: bool) -> Path:
    from multitask.data.synthetic import generate_synthetic

    return Path(generate_synthetic(Path(cfg["root"]).expanduser(), seed=cfg["seed"], show_progress=show_progress,
                                   layout=cfg["layout"], **cfg["generator"]))


DATA: dict[str, Callable[[dict, bool], Path]] = {
    "msrvtt": _existing_root, "msrvtt_qa": _existing_root, "activitynet": _existing_root, "lsmdc": _existing_root,
    "msvd": _existing_root, "didemo": _existing_root, "synthetic": _prepare_synthetic}

# file layout -> task -> (root, data config) -> (train rows, test rows)
TABLES: dict[str, dict[str, Callable]] = {
    "msrvtt": {"retrieval": lambda root, cfg: msrvtt.retrieval_tables(root, cfg.get("train_list", "9k")),
               "caption": lambda root, cfg: msrvtt.caption_tables(root),
               "qa": lambda root, cfg: msrvtt_qa.qa_tables(root)},
    "activitynet": {"retrieval": activitynet.retrieval_tables},
    "lsmdc": {"retrieval": lsmdc.retrieval_tables},
    "msvd": {"retrieval": msvd.retrieval_tables},
    "didemo": {"retrieval": didemo.retrieval_tables},
}
DATASETS: dict[str, type[VideoDataset]] = {"retrieval": VideoTextDataset, "caption": VideoTextDataset,
                                           "qa": QADataset}


def layout_of(cfg: dict) -> str:
    if cfg["name"] == "synthetic":
        return cfg["layout"]
    return "msrvtt" if cfg["name"] == "msrvtt_qa" else cfg["name"]


def _msrvtt_videos(root: Path, cfg: dict) -> tuple[Callable[[str], str], dict | None]:
    return partial(msrvtt.video_file, msrvtt.video_dir(root)), None


def _indexed_videos(root: Path, cfg: dict) -> tuple[Callable[[str], str], dict | None]:
    index = index_videos(Path(cfg.get("video_root") or root).expanduser())
    return partial(indexed_path, index), index


VIDEOS = {"msrvtt": _msrvtt_videos, "activitynet": _indexed_videos, "lsmdc": _indexed_videos,
          "msvd": _indexed_videos, "didemo": _indexed_videos}


def _drop_unfound(rows: datasets.Dataset, index: dict[str, str], split: str) -> tuple[datasets.Dataset, dict]:
    """Leave out (and report) rows whose video id matches no file under the video folder."""
    keep = [i for i, v in enumerate(rows["video_id"]) if v in index]
    if len(keep) == len(rows):
        return rows, {}
    unfound = sorted(set(rows["video_id"]) - set(index))
    logger.warning("%d %s videos have no file under the video folder and are left out, e.g. %s", len(unfound),
                   split, ", ".join(unfound[:5]))
    return rows.select(keep), {v: "no video file with this id" for v in unfound}


def _synthetic_attributes(root: Path, video_ids: list[str]) -> list[dict] | None:
    path = root / "synthetic_attributes.json"
    if not path.is_file():
        return None
    table = json.loads(path.read_text())
    return [table[v] for v in video_ids]


def _drop_bad(rows: datasets.Dataset, path_of: Callable[[str], str], infos: dict) -> datasets.Dataset:
    return rows.select([i for i, v in enumerate(rows["video_id"]) if path_of(v) in infos])


def video_base(cfg: dict, root: Path) -> Path:
    """The folder a layout's videos must stay inside (it may itself be a link to another disk)."""
    if layout_of(cfg) == "msrvtt":
        return msrvtt.video_dir(root)
    return Path(cfg.get("video_root") or root).expanduser()


def refuse_outside(paths: dict[str, str], root: Path) -> None:
    """Videos are read only from under the data (or video) root: an id that leads elsewhere is an error."""
    escaped = outside(paths, root)
    if escaped:
        listing = ", ".join(f"{v!r} -> {p}" for v, p in list(escaped.items())[:5])
        raise DataError(f"{len(escaped)} video ids lead outside {root} (refused: annotations may only name videos "
                        f"under the data root), e.g. {listing}")


def _tables(task: str, cfg: dict) -> Callable:
    if cfg["name"] not in DATA:
        raise ConfigError(f"unknown data {cfg['name']!r}; known: {', '.join(DATA)}")
    layout = layout_of(cfg)
    if layout not in TABLES:
        raise ConfigError(f"unknown data.layout {layout!r}; known: {', '.join(TABLES)}")
    if task not in TABLES[layout]:
        raise ConfigError(f"the {layout} layout has no annotations for task {task!r}; it serves: "
                         f"{', '.join(TABLES[layout])}")
    return TABLES[layout][task]


def build_multi_data(cfg: dict, annotations: dict[str, str], mixing: str, temperature: float,
                     show_progress: bool = True) -> TaskData:
    """``task=multi``: each head's annotations (head name -> annotation kind) from one root, the training
    sets mixed by ``mixing``."""
    parts = {head: build_data(kind, cfg, show_progress) for head, kind in annotations.items()}
    train = MultiTaskDataset({task: part.train for task, part in parts.items()}, mixing, temperature)
    skipped = {path: reason for part in parts.values() for path, reason in part.skipped.items()}
    return TaskData(train, None, skipped=skipped, parts=parts)


CACHES: dict[str, Callable[[dict, str], StoredClips]] = {"frame_cache": open_frame_cache,
                                                        "feature_cache": open_feature_cache}


def open_cache(cfg: dict, task: str) -> StoredClips | None:
    """The stored clips ``data.frame_cache`` or ``data.feature_cache`` names, if either; both hold
    segment-centre frames at the evaluation size, so ``data.augment`` is refused with them."""
    keys = [k for k in CACHES if cfg.get(k)]
    if not keys:
        return None
    if len(keys) > 1:
        raise ConfigError("set data.frame_cache or data.feature_cache, not both")
    if cfg.get("augment"):
        raise ConfigError(f"data.augment=true cannot be used with data.{keys[0]}: the cache holds centre-sampled "
                         f"frames at the evaluation size; set data.augment=false or data.{keys[0]}=null")
    return CACHES[keys[0]](cfg, task)


def build_data(task: str, cfg: dict, show_progress: bool = True) -> TaskData:
    """Parse the task's annotations, check every video once (``data.on_bad_video``), build the datasets."""
    tables = _tables(task, cfg)
    stored = open_cache(cfg, task)  # checked before any video is probed
    root = DATA[cfg["name"]](cfg, show_progress)
    train_rows, test_rows = tables(root, cfg)
    path_of, index = VIDEOS[layout_of(cfg)](root, cfg)
    unfound: dict[str, str] = {}
    if index is not None:
        (train_rows, lost_train), (test_rows, lost_test) = (_drop_unfound(rows, index, split) for rows, split in
                                                            ((train_rows, "training"), (test_rows, "test")))
        unfound = {**lost_train, **lost_test}
    ids = list(dict.fromkeys(list(train_rows["video_id"]) + list(test_rows["video_id"])))
    refuse_outside({v: path_of(v) for v in ids}, video_base(cfg, root))
    paths = [path_of(v) for v in ids]
    loading = Loading(DecoderSpec(cfg["decoder"], cfg["decode_timeout_s"]), cfg["on_bad_video"])
    infos, bad = check_videos(paths, cache_dir(root) / "video_probe.json", cfg["on_bad_video"], loading.decoder,
                              show_progress)
    if bad:
        train_rows, test_rows = (_drop_bad(rows, path_of, infos) for rows in (train_rows, test_rows))
    common = dict(path_of=path_of, infos=infos, num_frames=cfg["num_frames"], image_size=cfg["image_size"],
                  loading=loading, stored=stored)
    dataset_class = DATASETS[task]
    train = dataset_class(train_rows, train=True, seed=cfg["seed"], augment=cfg.get("augment", False), **common)
    test = dataset_class(test_rows, train=False, **common)
    return TaskData(train, test, _synthetic_attributes(root, test.video_ids()), {**unfound, **bad})


STREAM_ANNOTATIONS = ("retrieval", "caption")  # the heads (video, caption) pairs can train


def build_stream_data(cfg: dict, annotations: dict[str, str], mixing: str | None = None) -> TaskData:
    """``data=shards``: one stream of (video, caption) samples for every head (``annotations``: head -> the
    annotation kind it reads; task=multi takes turns, ``mixing`` round_robin); no test split."""
    wrong = sorted(head for head, kind in annotations.items() if kind not in STREAM_ANNOTATIONS)
    if wrong:
        raise ConfigError(f"data=shards holds (video, caption) pairs, which train {' and '.join(STREAM_ANNOTATIONS)} "
                          f"heads, not {', '.join(wrong)}")
    if mixing not in (None, "round_robin"):
        raise ConfigError("data=shards feeds every head from one stream: set task.mixing=round_robin")
    sources = parse_shards(cfg["shards"])
    check_sources(sources)
    loading = Loading(DecoderSpec(cfg["decoder"], cfg["decode_timeout_s"]), "skip")
    clip = ClipSettings(cfg["num_frames"], cfg["image_size"], cfg["augment"], cfg["caption_field"], loading)
    stream = ShardStream(sources, cfg["seed"], cfg["shuffle_buffer"], clip)
    parts = {head: TaskData(stream, None) for head in annotations} if mixing else {}
    return TaskData(stream, None, parts=parts)
