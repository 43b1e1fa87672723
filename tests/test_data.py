import json

import pytest
from conftest import data_config

from multitask.data.checks import BadVideoError
from multitask.data.msrvtt import retrieval_tables
from multitask.data.registry import build_data
from multitask.data.tables import AnnotationError


def data_cfg(root, **overrides):
    return data_config("msrvtt", root, **{"num_frames": 4, "image_size": 32, "max_words": 16, **overrides})


def test_tables_follow_the_lists(tiny_root):
    train, test = retrieval_tables(tiny_root, "9k")
    nine_k = (tiny_root / "MSRVTT_train.9k.csv").read_text().split()[1:]
    assert list(train["video_id"]) == nine_k
    assert all(3 <= len(c) <= 5 for c in train["captions"])
    assert len(test) == 16 and all(len(c) == 1 for c in test["captions"])
    seven_k, _ = retrieval_tables(tiny_root, "7k")
    assert len(seven_k) == 40
    with pytest.raises(ValueError, match="known: 9k, 7k"):
        retrieval_tables(tiny_root, "5k")


def test_dataset_items_and_per_sample_randomness(tiny_root):
    data = build_data("retrieval", data_cfg(tiny_root), show_progress=False)
    item = data.train[3]
    assert item["video"].shape == (4, 3, 32, 32) and item["video_mask"].shape == (4,)
    again = data.train[3]
    assert item["text"] == again["text"] and (item["video"] == again["video"]).all()
    texts = set()
    for epoch in range(8):
        data.train.set_epoch(epoch)
        texts.add(data.train[3]["text"])
    assert len(texts) > 1  # the caption changes with the epoch, deterministically
    captions, counts = data.test.captions()
    assert counts == [1] * 16 and len(captions) == 16


def test_malformed_json_names_file(tiny_copy):
    (tiny_copy / "MSRVTT_data.json").write_text('{"sentences": [')
    with pytest.raises(AnnotationError, match="MSRVTT_data.json: malformed JSON"):
        retrieval_tables(tiny_copy)


def test_missing_column_names_file_and_field(tiny_copy):
    (tiny_copy / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video\nret0,msr0,video0\n")
    with pytest.raises(AnnotationError, match=r"MSRVTT_JSFUSION_test.csv: missing column\(s\) video_id, sentence"):
        retrieval_tables(tiny_copy)


def test_missing_field_and_empty_caption(tiny_copy):
    data = json.loads((tiny_copy / "MSRVTT_data.json").read_text())
    del data["sentences"][2]["caption"]
    (tiny_copy / "MSRVTT_data.json").write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"sentences\[2\]: missing field 'caption'"):
        retrieval_tables(tiny_copy)
    data["sentences"][2]["caption"] = "   "
    (tiny_copy / "MSRVTT_data.json").write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"sentences\[2\].*empty 'caption'"):
        retrieval_tables(tiny_copy)


def _break_two_videos(root):
    train_id = (root / "MSRVTT_train.9k.csv").read_text().split()[1]
    test_id = (root / "MSRVTT_JSFUSION_test.csv").read_text().splitlines()[1].split(",")[2]
    (root / "videos" / "all" / f"{train_id}.mp4").unlink()
    path = root / "videos" / "all" / f"{test_id}.mp4"
    path.write_bytes(path.read_bytes()[:300])
    return train_id, test_id


def test_bad_videos_error_lists_every_file(tiny_copy):
    train_id, test_id = _break_two_videos(tiny_copy)
    with pytest.raises(BadVideoError) as err:
        build_data("retrieval", data_cfg(tiny_copy), show_progress=False)
    message = str(err.value)
    assert "2 of 68 videos" in message and f"{train_id}.mp4: missing" in message
    assert f"{test_id}.mp4: undecodable" in message


def test_bad_videos_skip_drops_them(tiny_copy):
    train_id, test_id = _break_two_videos(tiny_copy)
    data = build_data("retrieval", data_cfg(tiny_copy, on_bad_video="skip"), show_progress=False)
    assert len(data.train) == 51 and train_id not in data.train.video_ids()
    assert len(data.test) == 15 and test_id not in data.test.video_ids()
    assert sorted(p.split("/")[-1] for p in data.skipped) == sorted([f"{train_id}.mp4", f"{test_id}.mp4"])


def test_unknown_data_and_policy(tiny_root):
    with pytest.raises(ValueError, match="known: msrvtt, msrvtt_qa, activitynet, lsmdc, msvd, didemo, synthetic"):
        build_data("retrieval", data_cfg(tiny_root, name="webvid"), show_progress=False)
    with pytest.raises(ValueError, match="known: error, skip"):
        build_data("retrieval", data_cfg(tiny_root, on_bad_video="ignore"), show_progress=False)


def test_qa_layout_alone_with_videos_in_a_flat_folder(tiny_copy):
    """A root holding only msrvtt_qa/ and videos/video<N>.mp4 (no MSR-VTT files, no videos/all)."""
    for name in ("MSRVTT_data.json", "MSRVTT_train.9k.csv", "MSRVTT_train.7k.csv", "MSRVTT_JSFUSION_test.csv"):
        (tiny_copy / name).unlink()
    for video in (tiny_copy / "videos" / "all").glob("*.mp4"):
        video.rename(tiny_copy / "videos" / video.name)
    (tiny_copy / "videos" / "all").rmdir()
    data = build_data("qa", data_cfg(tiny_copy, name="msrvtt_qa"), show_progress=False)
    item = data.test[0]
    assert item["video"].shape == (4, 3, 32, 32) and item["question"] and item["answer"]
    first = data.test.rows[0]["video_id"]
    assert data.test.path_of(first) == str(tiny_copy / "videos" / f"{first}.mp4")
    with pytest.raises(AnnotationError, match="MSRVTT_data.json"):
        build_data("caption", data_cfg(tiny_copy), show_progress=False)
