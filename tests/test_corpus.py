"""The classifier on real mail: the corpus in tests/data/corpus (real bounces, complaints, auto-replies and human
replies from maintained mail libraries' test data, plus a few marked synthetic ones; see PROVENANCE.md and
MANIFEST.tsv). Each message is parsed once.

What must never happen: a non-lead forwarded (classified as a lead) or a lead lost (classified as anything else).
Per-class precision and recall are printed (`pytest -s tests/test_corpus.py`) and stated in the README."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from bot.mail.mime import LimitExceeded
from bot.services.incoming.rules import classify
from models import MessageKind

CORPUS = Path(__file__).parent / "data" / "corpus"
CLASSES = {
    "bounce": MessageKind.BOUNCE,
    "complaint": MessageKind.COMPLAINT,
    "autoreply": MessageKind.AUTO_REPLY,
    "list": MessageKind.LIST_MANAGER,
    "unsubscribe": MessageKind.UNSUBSCRIBE,
    "lead": MessageKind.LEAD,
}


def manifest() -> list[dict[str, str]]:
    with (CORPUS / "MANIFEST.tsv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture(scope="module")
def verdicts() -> list[tuple[dict[str, str], MessageKind, str]]:
    """(manifest row, kind, rule) for every message, classified once."""
    found = []
    for row in manifest():
        raw = (CORPUS / row["path"]).read_bytes()
        try:
            verdict = classify(raw)
            found.append((row, verdict.kind, verdict.rule))
        except LimitExceeded as exc:  # the pipeline forwards these as leads
            found.append((row, MessageKind.LEAD, f"over-limit:{exc.limit}"))
    return found


def test_every_file_is_in_the_manifest_with_provenance_and_a_licence() -> None:
    rows = manifest()
    listed = {row["path"] for row in rows}
    on_disk = {str(p.relative_to(CORPUS)) for p in CORPUS.glob("*/*.eml")}
    assert listed == on_disk
    assert all(row["source"] and row["licence"] and row["origin"] in ("real", "synthetic") for row in rows)
    assert sum(row["origin"] == "real" for row in rows) >= 400
    assert (CORPUS / "PROVENANCE.md").is_file() and any((CORPUS / "licenses").iterdir())


def test_no_non_lead_is_forwarded(verdicts: list[tuple[dict[str, str], MessageKind, str]]) -> None:
    wrong = [(row["path"], rule) for row, kind, rule in verdicts if kind == MessageKind.LEAD and row["class"] != "lead"]
    assert wrong == [], "non-leads that would be forwarded"


def test_no_lead_is_lost(verdicts: list[tuple[dict[str, str], MessageKind, str]]) -> None:
    lost = [(row["path"], kind, rule) for row, kind, rule in verdicts if row["class"] == "lead" and kind != "lead"]
    assert lost == [], "leads that would not be forwarded"


def test_unsubscribe_requests_are_recognised(verdicts: list[tuple[dict[str, str], MessageKind, str]]) -> None:
    missed = [
        (row["path"], kind) for row, kind, _ in verdicts if row["class"] == "unsubscribe" and kind != kind.UNSUBSCRIBE
    ]
    assert missed == []


def test_per_class_precision_and_recall(verdicts: list[tuple[dict[str, str], MessageKind, str]]) -> None:
    """Printed for the README; the floors are below today's figures so a regression shows."""
    table = precision_recall([(CLASSES[row["class"]], kind) for row, kind, _ in verdicts])
    print("\nclass        n    precision  recall")
    for kind, (n, precision, recall) in table.items():
        print(f"{kind:12} {n:4}  {precision:8.1%}  {recall:6.1%}")
    assert table[MessageKind.LEAD][1:] == (1.0, 1.0)
    assert table[MessageKind.BOUNCE][2] >= 0.98
    for kind in (MessageKind.COMPLAINT, MessageKind.UNSUBSCRIBE, MessageKind.LIST_MANAGER, MessageKind.AUTO_REPLY):
        assert table[kind][2] == 1.0, kind


def precision_recall(pairs: list[tuple[MessageKind, MessageKind]]) -> dict[MessageKind, tuple[int, float, float]]:
    """Per expected class: (messages, precision, recall)."""
    expected = Counter(e for e, _ in pairs)
    predicted = Counter(p for _, p in pairs)
    right = Counter(e for e, p in pairs if e == p)
    return {
        kind: (expected[kind], right[kind] / predicted[kind] if predicted[kind] else 0.0, right[kind] / expected[kind])
        for kind in expected
    }
