"""The caption decoder's vocabulary: a sentencepiece model trained on the training captions.

The model travels as its serialized proto (bytes): trained once on rank 0, broadcast, written to
``tokenizer.model`` in the run directory and in every checkpoint, and reloaded from there.
Ids: 0 pad, 1 unk, 2 bos, 3 eos. Text is case-folded (NFKC + lowercase), as caption metrics compare it.
"""
from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm
import torch

from multitask.errors import MissingInputError

FILE_NAME = "tokenizer.model"
PAD, UNK, BOS, EOS = 0, 1, 2, 3


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8000, model_type: str = "bpe") -> bytes:
    """Train on ``texts``; ``vocab_size`` is an upper bound (small corpora get fewer pieces)."""
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts)), model_writer=buffer, vocab_size=vocab_size, hard_vocab_limit=False,
        model_type=model_type, pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS, character_coverage=1.0,
        normalization_rule_name="nmt_nfkc_cf", num_threads=1, minloglevel=2)
    return buffer.getvalue()


class CaptionTokenizer:
    """Encode captions to padded id tensors with bos/eos; decode generated ids back to text."""

    def __init__(self, proto: bytes) -> None:
        self.proto = proto
        self.sp = spm.SentencePieceProcessor(model_proto=proto)

    @classmethod
    def load(cls, path: str | Path) -> CaptionTokenizer:
        path = Path(path).expanduser()
        if not path.is_file():
            raise MissingInputError(f"caption tokenizer {path} not found (train one with scripts/train_tokenizer.py)")
        return cls(path.read_bytes())

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.proto)

    @property
    def vocab_size(self) -> int:
        return self.sp.vocab_size()

    def encode(self, texts: list[str], max_length: int) -> torch.Tensor:
        """(B, L) ids ``bos, pieces..., eos, pad...``; pieces are cut to fit ``max_length``."""
        rows = [[BOS] + ids[: max_length - 2] + [EOS] for ids in self.sp.encode(texts)]
        out = torch.full((len(rows), max(len(r) for r in rows)), PAD, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row)
        return out

    def decode(self, ids: torch.Tensor) -> list[str]:
        """(B, L) generated ids -> text, stopping at the first eos."""
        texts = []
        for row in ids.tolist():
            row = row[1:] if row and row[0] == BOS else row
            row = row[: row.index(EOS)] if EOS in row else row
            texts.append(self.sp.decode([i for i in row if i not in (PAD, BOS)]).strip())
        return texts
