"""Damaged and hostile data: a decoder that hangs or crashes costs only its child process, videos that fail
after the check are skipped (training) or left out (evaluation) and recorded, or stop the run naming the
file; doctor --full finds damage the quick check misses; native decoder logs stay off the console; ids
that lead outside the data root are refused; the synthetic set is the same bytes for the same seed."""
import csv
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import GEN, REPO, TINY, data_config, run_train

from multitask.data.checks import BadVideoError
from multitask.data.registry import build_data
from multitask.data.synthetic import generate_synthetic
from multitask.decoding import DecodeError, Decoder, DecoderSpec
from multitask.errors import DataError
from multitask.video_io import read_frames

FAKE = DecoderSpec("fake_decoders", 3.0)
TESTS = {"PYTHONPATH": str(REPO / "tests")}  # where train.py's decoder children find fake_decoders


def ids(root: Path, name: str) -> list[str]:
    with open(root / name) as f:
        return [row["video_id"] for row in csv.DictReader(f)]


def test_a_hung_or_crashed_decoder_costs_only_its_child(tiny_root, tmp_path, monkeypatch):
    for name in ("clip_hang", "clip_crash", "clip_ok"):
        shutil.copy(tiny_root / "videos" / "all" / "video0.mp4", tmp_path / f"{name}.mp4")
    monkeypatch.setenv("EMCL_FAKE_BAD", "clip_hang=load:hang,clip_crash=load:crash")
    decoder = Decoder(FAKE)
    start = time.monotonic()
    with pytest.raises(DecodeError, match="timeout after 3 s"):
        decoder.call("read_frames", str(tmp_path / "clip_hang.mp4"), [0, 1], 32, 32)
    assert time.monotonic() - start < 15
    with pytest.raises(DecodeError, match=r"decoder crashed \(signal 11\)"):
        decoder.call("read_frames", str(tmp_path / "clip_crash.mp4"), [0, 1], 32, 32)
    frames = decoder.call("read_frames", str(tmp_path / "clip_ok.mp4"), [0, 3], 32, 32)  # a fresh child
    assert (frames == read_frames(str(tmp_path / "clip_ok.mp4"), [0, 3], 32, 32)).all()
    decoder.close()


def test_skip_substitutes_deterministically_and_records_the_failure(tiny_copy, monkeypatch):
    bad = ids(tiny_copy, "MSRVTT_train.9k.csv")[2]
    monkeypatch.setenv("EMCL_FAKE_BAD", f"{bad}=load:fail")
    cfg = data_config("msrvtt", tiny_copy, num_frames=4, image_size=32, max_words=16, on_bad_video="skip",
                      decoder="fake_decoders")
    first, second = (build_data("retrieval", cfg, show_progress=False).train for _ in range(2))  # two ranks
    index = list(first.rows["video_id"]).index(bad)
    item, again = first[index], second[index]
    assert json.loads(item["failed"])[0][0].endswith(f"{bad}.mp4")
    assert "corrupt macroblock" in json.loads(item["failed"])[0][1]
    assert torch.equal(item["video"], again["video"]) and item["text"] == again["text"]
    substitute = item["index"]
    assert substitute != index and torch.equal(item["video"], first[substitute]["video"])
    assert json.loads(first[substitute]["failed"]) == []
    with pytest.raises(BadVideoError, match=f"{bad}.mp4 failed while loading .*corrupt macroblock"):
        build_data("retrieval", {**cfg, "on_bad_video": "error"}, show_progress=False).train[index]


def test_training_survives_hangs_crashes_and_damage_and_evaluation_leaves_them_out(tiny_copy, tmp_path):
    train, test = ids(tiny_copy, "MSRVTT_train.9k.csv"), ids(tiny_copy, "MSRVTT_JSFUSION_test.csv")
    faults = {train[1]: "load:hang", train[2]: "load:crash", train[3]: "load:fail", train[4]: "probe:crash",
              test[0]: "load:fail"}
    env = {**TESTS, "EMCL_FAKE_BAD": ",".join(f"{v}={f}" for v, f in faults.items())}
    common = ("task=retrieval", "debug=quick", "data=msrvtt", f"data.root={tiny_copy}", "data.num_frames=4",
              "data.image_size=32", "data.decoder=fake_decoders", "data.decode_timeout_s=3",
              "trainer.batch_size=11", "trainer.max_steps=4")  # 4 batches of 11: every training clip once
    result = run_train(*common, "data.on_bad_video=skip", f"output_dir={tmp_path / 'skip'}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "[h264" not in result.stderr
    record = json.loads((tmp_path / "skip" / "skipped_videos.json").read_text())
    assert [Path(p).stem for p in record["videos"]] == [train[4]]  # found by the check before training
    assert "decoder crashed (signal 11)" in next(iter(record["videos"].values()))
    during = {Path(p).stem: r for p, r in record["while_training"].items()}
    assert set(during) == {train[1], train[2], train[3]} and record["count"] == 4
    assert during[train[1]]["reason"] == "timeout after 3 s" and 1 <= during[train[1]]["step"] <= 4
    assert during[train[2]]["reason"] == "decoder crashed (signal 11)"
    assert "corrupt macroblock" in during[train[3]]["reason"]
    report = json.loads((tmp_path / "skip" / "eval.json").read_text())
    assert report["num_skipped"] == 1 and list(report["skipped"]) == [test[0]] and report["num_samples"] == 15
    stopped = run_train(*common, "data.on_bad_video=error", f"output_dir={tmp_path / 'error'}",
                        env={**TESTS, "EMCL_FAKE_BAD": f"{train[3]}=load:fail"})
    assert stopped.returncode == 2 and "Traceback" not in stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1].startswith(f"error: {tiny_copy}") and f"{train[3]}.mp4" in \
        stopped.stderr.strip().splitlines()[-1]


def test_doctor_full_finds_damage_the_quick_check_misses(tiny_copy, monkeypatch, capsys):
    from multitask.cli import main

    bad = ids(tiny_copy, "MSRVTT_train.9k.csv")[3]
    monkeypatch.setenv("EMCL_FAKE_BAD", f"{bad}=load:fail")
    quick = main(["doctor", "--data", "msrvtt", "--root", str(tiny_copy), "--decoder", "fake_decoders"])
    out = capsys.readouterr().out
    assert quick == 0 and "quick check: first and last frame only" in out and bad not in out
    full = main(["doctor", "--data", "msrvtt", "--root", str(tiny_copy), "--decoder", "fake_decoders", "--full"])
    out = capsys.readouterr().out
    assert full == 1 and f"{bad}.mp4: damaged inside (RuntimeError: corrupt macroblock" in out


def damaged_clip(folder: Path) -> Path:
    """A real H.264 clip with bytes changed in the middle of its stream: libavcodec complains per macroblock."""
    root = generate_synthetic(folder / "big", seed=0, num_train=1, num_val=0, num_test=0, num_retrieval_test=0,
                              size=128, min_frames=60, max_frames=60, fps=24, show_progress=False)
    data = bytearray((root / "videos" / "all" / "video0.mp4").read_bytes())
    start = data.find(b"mdat") + (len(data) - data.find(b"mdat")) // 2
    data[start: start + 600: 3] = bytes((k * 37 + 11) % 256 for k in range(200))
    (folder / "damaged.mp4").write_bytes(bytes(data))
    return folder / "damaged.mp4"


def test_native_decoder_logs_stay_off_the_console(tmp_path, capfd):
    path = str(damaged_clip(tmp_path))
    code = (f"from multitask.video_io import decode_all_frames\ntry:\n    decode_all_frames({path!r})\n"
            "except Exception:\n    pass")
    in_process = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert "[h264 @" in in_process.stderr  # decoding it in a process prints libavcodec's complaints ...
    decoder = Decoder(DecoderSpec("multitask.video_io", 30.0))
    with pytest.raises(DecodeError, match="DECORDError"):
        decoder.call("decode_all_frames", path)
    decoder.close()
    assert capfd.readouterr().err == ""  # ... the isolated decoder keeps them off the console


@pytest.mark.parametrize("video_id", ["../../../etc/passwd", "/etc/hostname"])
def test_ids_that_lead_outside_the_data_root_are_refused(tiny_copy, video_id):
    test_file = tiny_copy / "MSRVTT_JSFUSION_test.csv"
    rows = test_file.read_text().splitlines()
    key, vid, _, sentence = rows[1].split(",", 3)
    test_file.write_text("\n".join([rows[0], f"{key},{vid},{video_id},{sentence}", *rows[2:]]) + "\n")
    with pytest.raises(DataError, match="lead outside .*refused"):
        build_data("retrieval", data_config("msrvtt", tiny_copy, num_frames=4), show_progress=False)


def test_a_link_out_of_the_video_tree_is_refused(tmp_path, tiny_root):
    root = generate_synthetic(tmp_path / "lsmdc", seed=0, show_progress=False, layout="lsmdc", **TINY)
    victim = next((root / "videos").rglob("*.avi"))
    outside = tmp_path / "elsewhere.avi"
    shutil.copy(victim, outside)
    victim.unlink()
    victim.symlink_to(outside)
    with pytest.raises(DataError, match="lead outside"):
        build_data("retrieval", data_config("lsmdc", root, num_frames=4), show_progress=False)


def test_same_seed_same_bytes(tmp_path):
    """Two generations in separate processes (as two users, or two runs of one) write identical files."""
    code = ("import sys; from multitask.data.synthetic import generate_synthetic\n"
            f"generate_synthetic(sys.argv[1], seed=3, show_progress=False, **{TINY!r})")
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], cwd=REPO, check=True)

    def digests(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")}

    first, second = digests(tmp_path / "a"), digests(tmp_path / "b")
    clips = TINY["num_train"] + TINY["num_val"] + TINY["num_test"]
    assert sum(name.endswith(".mp4") for name in first) == clips and first == second


def test_user_mistakes_end_with_one_line_and_exit_code_2(tmp_path):
    missing = run_train("data=msrvtt", "data.root=/nonexistent", f"output_dir={tmp_path}")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines()[-1] == ("error: data.root=/nonexistent does not exist; see the "
                                                      "README for the msrvtt layout")
    bad_value = run_train("model.pooling=max", GEN, f"output_dir={tmp_path}")
    assert bad_value.returncode == 2 and "unknown model.pooling 'max'" in bad_value.stderr.splitlines()[-1]


def test_too_many_failures_stop_the_run_but_a_handful_never_does(tmp_path):
    from multitask.bad_videos import BadVideoLog

    log = BadVideoLog(tmp_path / "skipped_videos.json", {"gone.mp4": "missing"}, max_fraction=0.01, is_main=True)
    one = [json.dumps([[f"v{i}.mp4", "timeout after 3 s"]]) for i in range(10)]
    log.update(one + ["[]"] * 6, step=1)  # 10 distinct failures in 26 loads: a handful, however high the share
    record = json.loads((tmp_path / "skipped_videos.json").read_text())
    assert record["count"] == 11 and record["while_training"]["v3.mp4"] == {"reason": "timeout after 3 s", "step": 1}
    resumed = BadVideoLog(tmp_path / "again.json", {}, 0.01, True)
    resumed.restore(log.state())
    assert resumed.state() == log.state()
    eleventh = [json.dumps([["v10.mp4", "decoder crashed (signal 11)"]])]
    with pytest.raises(BadVideoError, match="11 distinct videos failed to load in 28 loads"):
        log.update(eleventh, step=2)
    resumed.update(["[]"] * 2000, step=2)
    resumed.update(eleventh, step=3)  # 11 of 2028 loads: within data.max_bad_fraction=0.01
