"""ActivityNet, LSMDC, MSVD and DiDeMo: loaders on the synthetic set in each real layout, their traps,
and the evaluation protocol on a hand-made similarity matrix."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from conftest import DECODER, TINY, data_config

from multitask.data import activitynet, didemo, lsmdc, msvd
from multitask.data.registry import build_data
from multitask.data.synthetic import generate_synthetic
from multitask.data.tables import AnnotationError
from multitask.data.video_index import index_videos
from multitask.metrics import retrieval_report
from multitask.video import usable_frames
from multitask.video_io import VideoInfo


def data_cfg(layout: str, root: Path, **overrides) -> dict:
    return data_config(layout, root, **{"num_frames": 4, "image_size": 32, "max_words": 16, **overrides})


@pytest.fixture(scope="module", params=["activitynet", "lsmdc", "msvd", "didemo"])
def layout_root(request, tmp_path_factory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp(request.param) / "data"
    return request.param, generate_synthetic(root, seed=0, show_progress=False, layout=request.param, **TINY)


def test_each_layout_loads_with_its_protocol(layout_root):
    layout, root = layout_root
    data = build_data("retrieval", data_cfg(layout, root), show_progress=False)
    assert len(data.train) == 40 and len(data.test) == 24  # the synthetic train and test splits
    texts, counts = data.test.captions()
    if layout == "msvd":  # every caption of a test video is a query
        assert all(3 <= c <= 5 for c in counts) and len(texts) == sum(counts) > 24
    else:  # one paragraph (ActivityNet, DiDeMo) or one sentence (LSMDC test) per video
        assert counts == [1] * 24
    item = data.test[0]
    assert item["video"].shape == (4, 3, 32, 32) and item["video_mask"].sum() == 4
    assert data.attributes is not None and len(data.attributes) == 24
    if layout == "activitynet":  # an id with captions but no video: reported, left out, recorded
        assert data.skipped == {"v_synNoVideotrain": "no video file with this id",
                                "v_synNoVideotest": "no video file with this id"}
    if layout == "didemo":
        assert set(data.test.rows["max_seconds"]) == {30.0}


def test_activitynet_paragraphs_strip_leading_spaces(tmp_path):
    (tmp_path / "train_ids.json").write_text('["v_a", "v_gone"]')
    (tmp_path / "val_ids.json").write_text('["v_b"]')
    record = '{"duration": 3.0, "timestamps": [[0, 1], [1, 3]], "sentences": ["A man runs.", "  He jumps. "]}'
    (tmp_path / "train.json").write_text('{"v_a": ' + record + "}")
    (tmp_path / "val_1.json").write_text('{"v_b": ' + record + "}")
    train, test = activitynet.retrieval_tables(tmp_path, {})
    assert train[0] == {"video_id": "v_a", "captions": ["A man runs. He jumps."]} and len(train) == 1
    assert list(test["video_id"]) == ["v_b"]


def test_lsmdc_needs_exactly_six_fields(tmp_path):
    good = "1001_Movie_00.01.02.000-00.01.04.000\t00.01.02.000\t00.01.04.000\t00.01.02.000\t00.01.04.000\tHe sits."
    (tmp_path / lsmdc.FILES["train"]).write_text(good + "\n" + good.replace("He sits.", "He waits.") + "\n")
    (tmp_path / lsmdc.FILES["test"]).write_text("only\tthree\tfields\n")
    train = lsmdc._rows(tmp_path / lsmdc.FILES["train"])
    assert train == [{"video_id": "1001_Movie_00.01.02.000-00.01.04.000", "captions": ["He sits.", "He waits."]}]
    with pytest.raises(AnnotationError, match="line 1: 3 tab-separated fields, expected 6"):
        lsmdc.retrieval_tables(tmp_path, {})


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_msvd_pickle_with_globals_is_refused(tmp_path):
    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps({"vid": _Payload()}))
    with pytest.raises(AnnotationError, match="refusing to run code"):
        msvd.read_captions(tmp_path / "raw-captions.pkl")


def test_video_ids_drop_only_the_last_extension(tmp_path):
    names = ["3001_MOVIE_00.01.02.000-00.01.04.000.avi", "x@N00_1_ab.mov.mp4", "y@N00_2_cd..mp4", "v_q.mkv",
             "notes.txt"]
    for i, name in enumerate(names):
        folder = tmp_path / f"sub{i}"
        folder.mkdir()
        (folder / name).write_bytes(b"")
    assert set(index_videos(tmp_path)) == {"3001_MOVIE_00.01.02.000-00.01.04.000", "x@N00_1_ab.mov",
                                           "y@N00_2_cd.", "v_q"}


def test_didemo_window_keeps_the_first_30_seconds():
    info = VideoInfo(num_frames=1500, height=240, width=320, fps=25.0)
    assert usable_frames(info, 1500, 30.0) == 750 and usable_frames(info, 1500, None) == 1500
    assert usable_frames(VideoInfo(100, 240, 320, fps=0.0), 100, 30.0) == 100  # unknown rate: whole clip
    assert didemo.MAX_SECONDS == 30.0


def test_msvd_multi_caption_metrics_by_hand(tmp_path):
    """Three test videos with 2, 1 and 2 captions; the metrics of a hand-made matrix, computed by hand."""
    words = {"a-1_0_2": [["a", "dog"], ["a", "puppy"]], "b_3-4_9": [["a", "cat"]],
             "c_5_7": [["a", "car"], ["an", "auto"]]}
    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps(words, protocol=2))
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}_list.txt").write_text("a-1_0_2\nb_3-4_9\nc_5_7\n")
    _, test = msvd.retrieval_tables(tmp_path, {})
    counts = [len(c) for c in test["captions"]]
    assert counts == [2, 1, 2] and test[0]["captions"] == ["a dog", "a puppy"]
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.5, 0.1], [0.1, 0.8, 0.3], [0.0, 0.2, 0.7], [0.6, 0.1, 0.4]])
    report = retrieval_report(sim, counts)
    # text-to-video ranks (0-based): 0, 1, 0, 0, 1
    assert report["t2v/R@1"] == 60.0 and report["t2v/R@5"] == 100.0
    assert report["t2v/MdR"] == 1.0 and report["t2v/MnR"] == pytest.approx(1.4)
    # video-to-text by each group's best caption: v0 -> (0.9, 0.1, 0.6), v1 -> (0.5, 0.8, 0.2), v2 -> (0.1, 0.3, 0.7)
    assert report["v2t/R@1"] == 100.0 and report["v2t/MnR"] == 1.0


def test_layouts_serve_retrieval_only(layout_root):
    layout, root = layout_root
    message = f"the {layout} layout has no annotations for task 'caption'; it serves: retrieval"
    with pytest.raises(ValueError, match=message):
        build_data("caption", data_cfg(layout, root), show_progress=False)


def test_train_and_evaluate_on_a_synthetic_layout(tmp_path):
    """data=synthetic data.layout=msvd: generated in the MSVD layout, trained, scored caption by caption."""
    import json

    from conftest import GEN, run_train

    out = tmp_path / "run"
    result = run_train("task=retrieval", "debug=quick", "data.layout=msvd", f"data.root={tmp_path / 'data'}", GEN,
                       f"output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "eval.json").read_text())
    assert report["num_samples"] > 24 and "probe/colour" not in report["metrics"]  # every caption a query
    assert (tmp_path / "data" / "raw-captions.pkl").is_file()


def test_doctor_reports_repeated_and_uncaptioned_ids_of_id_lists(tmp_path):
    """The loaders drop these quietly (real lists hold them); doctor must name them."""
    import json

    from multitask.doctor import diagnose

    root = generate_synthetic(tmp_path / "anet", seed=0, show_progress=False, layout="activitynet", **TINY)
    ids = json.loads((root / "train_ids.json").read_text())
    (root / "train_ids.json").write_text(json.dumps(ids + [ids[0], "v_neverCaptioned"]))
    report = diagnose("activitynet", root, DECODER, show_progress=False)
    assert f"retrieval train: 1 ids appear more than once in the id list, e.g. {ids[0]}" in report.problems
    assert ("retrieval train: 2 listed ids have no captions, e.g. v_synNoCaptiontrain, v_neverCaptioned"
            in report.problems)  # the generator writes one such id per split, as the real lists hold them
    assert "retrieval test: 1 listed ids have no captions, e.g. v_synNoCaptiontest" in report.problems
