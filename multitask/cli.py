"""The ``multitask`` command: use trained checkpoints on your own videos and embeddings, check datasets.

    multitask index VIDEO_DIR --checkpoint C --out INDEX
    multitask search INDEX "a query" -k 5 [--rerank 200 | --exact]
    multitask serve INDEX [--checkpoint C] [--port 8000]
    multitask caption --checkpoint C clip.mp4 ...
    multitask answer --checkpoint C clip.mp4 "question"
    multitask emcl-score TEXT.npy VIDEO.npy [--out SCORES.npy]
    multitask doctor --data msrvtt --root DIR
    multitask import-reference PATH --out DIR --clip ViT-B-32 [--source emcl|clip4clip|emcl_qa] [--emcl-mean FILE]
                             [--answers FILE]
    multitask export CHECKPOINT --out DIR [--push-to-hub REPO [--private]]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from multitask.ann import DEFAULT_RERANK
from multitask.errors import UserError


def cmd_index(args: argparse.Namespace) -> int:
    from multitask.api import load
    from multitask.search_index import update_index

    model = load(args.checkpoint)
    summary = update_index(model.encode_frames, model.pool_frames, str(model.checkpoint.resolve()), args.video_dir,
                           args.out, model.decoder, args.batch_size)
    print(f"{args.out}: {summary['added']} videos added, {summary['already']} already indexed, "
          f"{len(summary['failed'])} unreadable")
    for path, reason in summary["failed"].items():
        print(f"  unreadable: {path}: {reason}", file=sys.stderr)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from multitask.api import load
    from multitask.search_index import SearchIndex

    index = SearchIndex(args.index)
    found = load(args.checkpoint or index.checkpoint).search(args.query, args.k, index, args.rerank, args.exact)
    for rank, (video_id, score) in enumerate(found, 1):
        print(f"{rank}\t{video_id}\t{score:.4f}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from multitask.api import load
    from multitask.search_index import SearchIndex
    from multitask.serve import serve

    index = SearchIndex(args.index)
    serve(load(args.checkpoint or index.checkpoint), index, args.host, args.port, args.rerank)
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    from multitask.api import load

    for path, text in zip(args.videos, load(args.checkpoint).caption([str(p) for p in args.videos])):
        print(f"{path}\t{text}")
    return 0


def cmd_answer(args: argparse.Namespace) -> int:
    from multitask.api import load

    print(load(args.checkpoint).answer(str(args.video), args.question))
    return 0


def cmd_emcl_score(args: argparse.Namespace) -> int:
    from multitask.emcl import emcl_similarity
    from multitask.metrics import format_table, retrieval_metrics

    text, video = (torch.from_numpy(np.load(p)).float() for p in (args.text, args.video))
    scores = emcl_similarity(text, video, seed=args.seed, num_bases=args.num_bases, iters=args.iters).numpy()
    np.save(args.out, scores)
    print(f"{args.out}: scores {scores.shape[0]} texts x {scores.shape[1]} videos")
    if scores.shape[0] == scores.shape[1]:  # row i matches column i
        metrics = {f"t2v/{k}": v for k, v in retrieval_metrics(scores).items()}
        metrics.update({f"v2t/{k}": v for k, v in retrieval_metrics(scores.T).items()})
        print(format_table(metrics))
        target = args.metrics or args.out.with_suffix(".metrics.json")
        target.write_text(json.dumps(metrics, indent=2))
        print(f"{target}: retrieval metrics (row i matches column i)")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from multitask.decoding import DecoderSpec
    from multitask.doctor import diagnose

    decoder = DecoderSpec(args.decoder, args.decode_timeout)
    report = diagnose(args.data, args.root, decoder, args.video_root, full=args.full,
                      show_progress=sys.stderr.isatty())
    print("\n".join(report.lines))
    print(f"{len(report.problems)} problem(s) found" if report.problems else "no problems found")
    return 1 if report.problems else 0


def cmd_import_reference(args: argparse.Namespace) -> int:
    from multitask.reference import import_reference

    out = import_reference(args.path, args.out, clip=args.clip, source=args.source, emcl_mean=args.emcl_mean,
                           num_frames=args.num_frames, max_words=args.max_words, answers=args.answers)
    print(f"{out}: checkpoint folder (multitask.load, eval_only=true checkpoint=..., resume=... accept it)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from multitask.portable import export, folder_size

    out = export(args.checkpoint, args.out, args.push_to_hub, args.private)
    print(f"{out}: model folder, {folder_size(out) / 1e6:.1f} MB (the checkpoint with its training state: "
          f"{folder_size(args.checkpoint) / 1e6:.1f} MB); multitask.load, eval_only=true checkpoint=... and resume=... "
          "accept it" + (f"; uploaded to the Hub repository {args.push_to_hub}" if args.push_to_hub else ""))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multitask", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("index", help="embed every video under a folder once (resumable)")
    p.add_argument("video_dir", type=Path)
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(run=cmd_index)
    p = sub.add_parser("search", help="rank the indexed videos for a text query (EMCL as at evaluation)")
    p.add_argument("index", type=Path)
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--checkpoint", type=Path, help="default: the checkpoint the index was built with")
    p.add_argument("--rerank", type=int, default=DEFAULT_RERANK, help="candidates of the approximate first stage "
                                                                      "that EMCL re-ranks (default %(default)s)")
    p.add_argument("--exact", action="store_true", help="score every indexed video through EMCL (slow on large "
                                                         "indexes; also searches indexes of the old format)")
    p.set_defaults(run=cmd_search)
    p = sub.add_parser("serve", help="a local search page over an index: results with frames, captions, answers")
    p.add_argument("index", type=Path)
    p.add_argument("--checkpoint", type=Path, help="default: the checkpoint the index was built with")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="0: any free port (the address is printed)")
    p.add_argument("--rerank", type=int, default=DEFAULT_RERANK, help="as for search")
    p.set_defaults(run=cmd_serve)
    p = sub.add_parser("caption", help="caption video files")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("videos", nargs="+", type=Path)
    p.set_defaults(run=cmd_caption)
    p = sub.add_parser("answer", help="answer a question about a video file")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("video", type=Path)
    p.add_argument("question")
    p.set_defaults(run=cmd_answer)
    p = sub.add_parser("emcl-score", help="out-of-the-box EMCL on embeddings from any model (paper Table 2)")
    p.add_argument("text", type=Path, help=".npy (num_texts, D)")
    p.add_argument("video", type=Path, help=".npy (num_videos, D)")
    p.add_argument("--out", type=Path, default=Path("emcl_scores.npy"))
    p.add_argument("--metrics", type=Path,
                   help="where the retrieval metrics of square input go (default: OUT with .metrics.json)")
    p.add_argument("--num-bases", type=int, default=32)
    p.add_argument("--iters", type=int, default=9)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_emcl_score)
    p = sub.add_parser("doctor", help="check a dataset: files, decodability, counts, ids, text statistics")
    p.add_argument("--data", required=True, help="msrvtt, msrvtt_qa, activitynet, lsmdc, msvd or didemo")
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("--video-root", type=Path)
    p.add_argument("--full", action="store_true", help="decode every frame of every video (finds damage between "
                                                        "the first and last frame, which the quick check misses)")
    p.add_argument("--decoder", default="multitask.video_io", help="decoder module (data.decoder)")
    p.add_argument("--decode-timeout", type=float, default=60.0, help="seconds per video (data.decode_timeout_s)")
    p.set_defaults(run=cmd_doctor)
    p = sub.add_parser("import-reference", help="turn an EMCL-Net, EMCL-QA or CLIP4Clip checkpoint into a checkpoint folder")
    p.add_argument("path", type=Path, help="the state dict the reference's training script saved")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--clip", default="ViT-B-32", help="the open_clip architecture of its CLIP (default ViT-B-32)")
    p.add_argument("--source", default="emcl", choices=["emcl", "clip4clip", "emcl_qa"])
    p.add_argument("--emcl-mean", type=Path, help="the reference's EMCL running mean (.npy/.pt/.safetensors, K "
                                                   "values); its checkpoints do not store it")
    p.add_argument("--answers", type=Path, help="emcl_qa: the answer of each classifier output (a JSON list, or "
                                                "the ans2label dict it was trained with)")
    p.add_argument("--num-frames", type=int, default=12)
    p.add_argument("--max-words", type=int, default=32)
    p.set_defaults(run=cmd_import_reference)
    p = sub.add_parser("export", help="write a checkpoint's model as a portable folder (weights, config, tokenizer or "
                                      "answers, model card); optionally upload it to the Hugging Face Hub")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", required=True, type=Path, help="a new folder")
    p.add_argument("--push-to-hub", metavar="REPO", help="also upload it to this Hub model repository (needs a login)")
    p.add_argument("--private", action="store_true", help="create the Hub repository private")
    p.set_defaults(run=cmd_export)
    return parser



def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (UserError, FileNotFoundError, ValueError) as err:  # bad input: one clear line, no traceback
        print(f"multitask {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
