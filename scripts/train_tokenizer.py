"""Train the caption decoder's sentencepiece tokenizer on the training captions.

    python scripts/train_tokenizer.py --root /data/msrvtt --out tokenizer.model --vocab-size 8000
    python scripts/train_tokenizer.py --captions captions.txt --out tokenizer.model   # one caption per line

Then train with ``task.tokenizer=tokenizer.model`` (runs train one automatically when none is given).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from multitask.caption_tokenizer import CaptionTokenizer, train_tokenizer
from multitask.data.msrvtt import caption_tables


def training_captions(root: Path | None, captions: Path | None) -> list[str]:
    if captions is not None:
        return [line.strip() for line in captions.read_text(encoding="utf-8").splitlines() if line.strip()]
    train, _ = caption_tables(root)
    return [c for group in train["captions"] for c in group]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--root", type=Path, help="MSR-VTT root (captions of the 'train' split of MSRVTT_data.json)")
    source.add_argument("--captions", type=Path, help="a text file with one caption per line")
    parser.add_argument("--out", type=Path, required=True, help="where to write the .model file")
    parser.add_argument("--vocab-size", type=int, default=8000, help="upper bound on the number of pieces")
    parser.add_argument("--model-type", default="bpe", choices=["unigram", "bpe", "word", "char"])
    args = parser.parse_args()
    texts = training_captions(args.root, args.captions)
    tokenizer = CaptionTokenizer(train_tokenizer(texts, args.vocab_size, args.model_type))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(args.out)
    print(f"{args.out}: {tokenizer.vocab_size} pieces from {len(texts)} captions")


if __name__ == "__main__":
    main()
