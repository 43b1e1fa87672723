"""data=shards: which shards each reader reads, the stream's epochs, exact resumption, damaged shards, and the
shard writer (multitask/data/shards.py, stream.py, shard_writer.py; scripts/make_shards.py)."""
from __future__ import annotations

import importlib.util
import io
import itertools
import json
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import DECODER, REPO, SHARD_SIZE

from multitask.data.shards import Portion, epoch_shards, parse_shards, reader_portions
from multitask.data.stream import ClipSettings, ShardStream, Topology, read_portion
from multitask.data.video_text import Loading
from multitask.engine import quote_overrides
from multitask.errors import ConfigError
from multitask.streaming import restored_states

CLIP = ClipSettings(num_frames=2, image_size=32, augment=False, caption_field=None, loading=Loading(DECODER, "skip"))


def stream(pattern: str, buffer: int = 10, caption_field: str | None = None) -> ShardStream:
    clip = ClipSettings(**{**CLIP.__dict__, "caption_field": caption_field})
    return ShardStream(parse_shards(pattern), 0, buffer, clip)


def batches(source: ShardStream, n: int, batch_size: int, topology: Topology, states: dict | None = None) -> list:
    source.configure(batch_size, topology, states or {})
    return list(itertools.islice(source.loader(), n))


def seen(found: list[dict], epoch: int) -> list[str]:
    return [key for b in found for e, _, key in b["stream"]["seen"] if e == epoch]


@pytest.mark.parametrize("num_shards,readers", [(8, 1), (8, 3), (8, 8), (3, 8), (1, 4), (5, 2)])
def test_every_sample_of_an_epoch_goes_to_exactly_one_reader(num_shards, readers):
    shards = [f"s{i}.tar" for i in range(num_shards)]
    taken = Counter()
    for reader in range(readers):
        for part in reader_portions(shards, reader, readers):
            taken.update((part.url, p) for p in range(40) if p % part.stride == part.offset)
    assert taken == Counter({(url, p): 1 for url in shards for p in range(40)})


def test_weights_repeat_or_subsample_a_source_and_shuffle_by_epoch(tmp_path):
    sources = parse_shards(f"{tmp_path}/a{{0..3}}.tar@2::{tmp_path}/b{{0..9}}.tar@0.5")
    assert [len(s.urls) for s in sources] == [4, 10] and [s.weight for s in sources] == [2.0, 0.5]
    first, again, second = epoch_shards(sources, 0, 0), epoch_shards(sources, 0, 0), epoch_shards(sources, 0, 1)
    counts = Counter(first)
    assert first == again and first != second
    assert all(counts[u] == 2 for u in sources[0].urls) and sum(u in sources[1].urls for u in first) == 5
    assert parse_shards([f"{tmp_path}/x.tar", f"{tmp_path}/y.tar"])[1].urls == (f"{tmp_path}/y.tar",)
    for bad in ("", f"{tmp_path}/a.tar@0"):
        with pytest.raises(ConfigError):
            parse_shards(bad)


def test_brace_patterns_survive_hydra_and_the_shell():
    assert quote_overrides(["data.shards=/d/{000..009}.tar", "trainer.lr=1"]) == \
        ["data.shards='/d/{000..009}.tar'", "trainer.lr=1"]
    expanded_by_bash = ["data.shards=/d/000.tar", "data.shards=/d/001.tar", "task=x"]
    assert quote_overrides(expanded_by_bash) == ["data.shards='/d/000.tar::/d/001.tar'", "task=x"]
    assert quote_overrides(["data.shards='/q/{0..1}.tar'"]) == ["data.shards='/q/{0..1}.tar'"]


def test_writer_keeps_the_files_and_captions(shards, tiny_train):
    manifest = json.loads((Path(shards).parent / "shards.json").read_text())
    assert manifest["pattern"] == shards and manifest["shards"] == [7] * 7 + [3] and manifest["samples"] == 52
    _, sample = next(read_portion(Portion(parse_shards(shards)[0].urls[0])))
    row = tiny_train.rows[0]
    assert sample["__key__"] == row["video_id"] and sample["txt"].decode() == row["captions"][0]
    assert sample["mp4"] == Path(tiny_train.path_of(row["video_id"])).read_bytes()
    assert json.loads(sample["json"])["captions"] == row["captions"]


@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_yields_every_sample_once_over_processes_and_workers(shards, tiny_train, workers):
    per_rank = [batches(stream(shards), 8, 4, Topology(rank, 2, workers)) for rank in (0, 1)]
    keys = seen(per_rank[0], 0) + seen(per_rank[1], 0)
    assert sorted(keys) == sorted(tiny_train.video_ids())  # 52 samples, each once
    first = per_rank[0][0]
    assert first["video"].shape == (4, 2, 3, 32, 32) and first["video_mask"].shape == (4, 2)
    assert first["stream"]["reader"] == 0 and per_rank[1][0]["stream"]["reader"] == max(1, workers)


def test_the_order_is_shuffled_and_reproducible(shards):
    one, two = (batches(stream(shards), 4, 4, Topology(0, 1, 0)) for _ in range(2))
    assert [b["key"] for b in one] == [b["key"] for b in two]
    unbuffered = batches(stream(shards, buffer=1), 4, 4, Topology(0, 1, 0))
    assert [b["key"] for b in one] != [b["key"] for b in unbuffered]


def test_a_resumed_stream_continues_exactly(shards):
    """States taken from consumed batches (what a checkpoint keeps) give the batches that followed, buffer
    content, worker turn and frame offsets included."""
    full = batches(stream(shards), 12, 4, Topology(0, 1, 2))
    consumed = 5  # mid-epoch, with samples in the shuffle buffers of both readers
    states = {b["stream"]["reader"]: b["stream"]["state"] for b in full[:consumed]}
    assert all(s["buffer"] for s in states.values())
    saved = restored_states({"readers": 2, "states": states}, Topology(0, 1, 2))
    resumed = batches(stream(shards), 7, 4, Topology(0, 1, 2, rotation=consumed % 2), saved)
    assert [b["key"] for b in resumed] == [b["key"] for b in full[consumed:]]
    assert all(torch.equal(a["video"], b["video"]) for a, b in zip(resumed, full[consumed:]))


def test_captions_from_a_json_field_draw_among_its_list(shards, tiny_train):
    found = batches(stream(shards, caption_field="captions"), 13, 4, Topology(0, 1, 0))
    by_id = dict(zip(tiny_train.video_ids(), tiny_train.rows["captions"]))
    texts = [(key, text) for b in found for key, text in zip(b["key"], b["text"])]
    assert all(text in by_id[key] for key, text in texts)
    assert any(text != by_id[key][0] for key, text in texts)


def _rewrite(path: Path, change) -> None:
    """Rewrite a shard's members through ``change(name, data) -> data or None`` (None drops the member)."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            data = change(member.name, data)
            if data is not None:
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))


def damaged_copy(shards: str, folder: Path) -> str:
    """Shard 1: one undecodable video, one missing caption; 2: cut inside its third sample's video;
    3: not a tar; 4: missing."""
    urls = parse_shards(shards)[0].urls
    for url in urls[:6]:
        (folder / Path(url).name).write_bytes(Path(url).read_bytes())
    names = sorted(m.name for m in tarfile.open(folder / "00001.tar").getmembers())
    broken_video, no_caption = names[1], names[5]  # a.json a.mp4 a.txt b.json b.mp4 b.txt ...
    _rewrite(folder / "00001.tar", lambda name, data: None if name == no_caption else
             (data[:300] + b"\0" * 500 if name == broken_video else data))
    with tarfile.open(folder / "00002.tar") as tar:
        cut = tar.getmembers()[7].offset_data + 100
    (folder / "00002.tar").write_bytes((folder / "00002.tar").read_bytes()[:cut])
    (folder / "00003.tar").write_bytes(b"not a tar file " * 100)
    (folder / "00004.tar").unlink()
    return f"{folder}/{{00000..00005}}.tar"


def test_damaged_samples_and_shards_are_skipped_and_counted(shards, tmp_path):
    found = batches(stream(damaged_copy(shards, tmp_path)), 6, 4, Topology(0, 1, 0))
    assert found[-1]["stream"]["state"]["epoch"] == 1
    assert len(set(seen(found, 0))) == 7 + 5 + 2 + 7  # the usable samples of shards 0, 1, 2 and 5
    records = [(shard, key, reason) for b in found for epoch, shard, key, reason in b["stream"]["bad"] if epoch == 0]
    expected = {"00001.tar": ["undecodable", "missing caption"], "00002.tar": ["breaks off after 3 samples",
                                                                              "missing video"],
                "00003.tar": ["cannot be read"], "00004.tar": ["cannot be opened"]}
    assert sorted((Path(s).name, r.split(" (")[0]) for s, _, r in records) == \
        sorted((shard, why) for shard, reasons in expected.items() for why in reasons)
    state = found[-1]["stream"]["state"]  # the counters include what epoch 1 met before its first samples
    assert state["bad_shards"] >= 3 and state["bad_samples"] >= 3
    assert state["bad_shards"] + state["bad_samples"] == sum(len(b["stream"]["bad"]) for b in found)


def test_shards_nobody_can_read_stop_with_a_message(tmp_path):
    (tmp_path / "0.tar").write_bytes(b"junk")
    with pytest.raises(Exception, match="found no sample in its shards"):
        batches(stream(f"{tmp_path}/0.tar"), 1, 2, Topology(0, 1, 0))


def run_script(name: str, args: list[str], monkeypatch) -> None:
    """``python scripts/<name>.py ARGS`` in this process (the imports are paid once per test session)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [name, *args])
    module.main()


def test_make_shards_command_writes_the_training_split(tiny_root, tmp_path, shards, monkeypatch, capsys):
    run_script("make_shards", ["--data", "msrvtt", "--root", str(tiny_root), "--out", str(tmp_path),
                               "--samples-per-shard", str(SHARD_SIZE)], monkeypatch)
    out = capsys.readouterr().out
    assert "52 samples" in out and "data.shards=" in out
    for url in parse_shards(shards)[0].urls:  # the same bytes as the library writes, every time
        assert (tmp_path / Path(url).name).read_bytes() == Path(url).read_bytes()
    with pytest.raises(SystemExit) as stop:
        run_script("make_shards", ["--data", "msrvtt", "--root", str(tmp_path / "none"), "--out", str(tmp_path)],
                   monkeypatch)
    assert stop.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_bench_shards_quick_json(tmp_path, monkeypatch, capsys):
    out = tmp_path / "bench.json"
    run_script("bench_shards", ["--quick", "--json", str(out)], monkeypatch)
    report = json.loads(out.read_text())
    assert set(report["clips_per_second"]) == {"files", "shards"} and set(report["shards_vs_files"]) == {"0", "1", "2"}
    assert all(rate > 0 for rates in report["clips_per_second"].values() for rate in rates.values())
    assert "shards/files" in capsys.readouterr().out


class InProcessDecoder:
    """``multitask.decoding.Decoder``'s interface, run in this process (so a test can patch decord)."""

    def call(self, function: str, *args):
        from multitask import video_io
        from multitask.decoding import DecodeError

        try:
            return getattr(video_io, function)(*args)
        except Exception as err:
            raise DecodeError(video_io.error_summary(err)) from None


def test_a_container_claiming_frames_it_lacks_is_probed_again(monkeypatch, tiny_train):
    """Streamed samples are probed from their first frame only; when frames the container claims do not decode,
    the file probe's decodable count is used, as for files."""
    import types

    import multitask.video_io as video_io
    from multitask.data.stream import make_item

    real = video_io._decord()

    class Overcounting:  # three frames more than decode, as some containers claim
        def __init__(self, source, **kwargs):
            self.inner = real.VideoReader(source, **kwargs)

        def __len__(self):
            return len(self.inner) + 3

        def get_batch(self, indices):
            if max(indices) >= len(self.inner):
                raise RuntimeError("Error reading frame past the end")
            return self.inner.get_batch(indices)

        def get_avg_fps(self):
            return self.inner.get_avg_fps()

    path = tiny_train.path_of(tiny_train.video_ids()[0])
    true_count = video_io.probe_video(path).num_frames
    monkeypatch.setattr(video_io, "_decord", lambda: types.SimpleNamespace(VideoReader=Overcounting))
    sample = {"__url__": "s.tar", "__key__": "k", "mp4": Path(path).read_bytes(), "txt": b"a caption"}
    item = make_item(sample, 0, 0, ClipSettings(**{**CLIP.__dict__, "num_frames": 20}), InProcessDecoder())
    assert item["video_mask"].sum() == min(20, true_count) and item["text"] == "a caption"
