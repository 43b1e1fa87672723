"""MSRVTT-QA annotations (docs/architecture.md, "Data").

- ``{root}/msrvtt_qa/{train,val,test}_qa.json``: a list of ``{"question", "answer", "video_id": int,
  "id", "category_id"}`` (``category_id`` 0-4 = what, who, how, when, where);
- or the JSON-lines variant ``{root}/msrvtt_qa/{train,val,test}.jsonl`` with
  ``{"question", "answer", "video_id", "answer_type"}`` (``video_id`` as ``video7010`` or ``7010``);
- videos at ``{root}/videos/all/video{video_id}.mp4`` (the MSR-VTT clips).

Rows come out as ``{"video_id": "video7010", "question", "answer", "category", "question_id"}``.
"""
from __future__ import annotations

import json
from pathlib import Path

import datasets

from multitask.data.tables import AnnotationError, cached_table, read_json, require_fields

CATEGORIES = ("what", "who", "how", "when", "where")
QA_DIR = "msrvtt_qa"


def _video_id(value: object, where: str) -> str:
    text = str(value).strip()
    number = text[len("video"):] if text.startswith("video") else text
    if not number.isdigit():
        raise AnnotationError(f"{where}: 'video_id' {value!r} is neither a number nor 'video<number>'")
    return f"video{int(number)}"


def _category(record: dict, where: str) -> str:
    if "category_id" in record:
        index = record["category_id"]
        if not isinstance(index, int) or not 0 <= index < len(CATEGORIES):
            raise AnnotationError(f"{where}: 'category_id' {index!r} is not one of 0-4 ({', '.join(CATEGORIES)})")
        return CATEGORIES[index]
    if record.get("answer_type"):
        return str(record["answer_type"]).strip().lower()
    first = str(record["question"]).strip().split(" ")[0].lower()
    return first if first in CATEGORIES else "other"


def _row(record: object, index: int, where: str) -> dict:
    record = require_fields(record, ("question", "answer", "video_id"), where)
    question, answer = str(record["question"]).strip(), str(record["answer"]).strip()
    if not question or not answer:
        raise AnnotationError(f"{where}: empty {'question' if not question else 'answer'}")
    return {"video_id": _video_id(record["video_id"], where), "question": question, "answer": answer,
            "category": _category(record, where), "question_id": int(record.get("id", index))}


def _read_jsonl(path: Path) -> list[object]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise AnnotationError(f"{path} line {number}: malformed JSON: {err.msg}") from err
    return records


def split_file(root: Path, split: str) -> Path:
    """The annotation file of a split: ``{split}_qa.json`` if present, else ``{split}.jsonl``."""
    folder = root / QA_DIR
    for path in (folder / f"{split}_qa.json", folder / f"{split}.jsonl"):
        if path.is_file():
            return path
    raise AnnotationError(f"no MSRVTT-QA {split} annotations: expected {folder / f'{split}_qa.json'} "
                          f"or {folder / f'{split}.jsonl'}")


def _rows(path: Path) -> list[dict]:
    records = _read_jsonl(path) if path.suffix == ".jsonl" else read_json(path)
    if not isinstance(records, list):
        raise AnnotationError(f"{path}: expected a list of questions, got {type(records).__name__}")
    return [_row(r, i, f"{path} [{i}]") for i, r in enumerate(records)]


def qa_tables(root: Path) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, test) question rows."""
    tables = []
    for split in ("train", "test"):
        path = split_file(root, split)
        tables.append(cached_table(root, f"msrvtt-qa-{split}", [path], lambda p=path: _rows(p)))
    return tables[0], tables[1]
