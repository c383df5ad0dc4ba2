"""The skip ledger and index cleaning, on their own: a bad row counts once, is named once, and strict stops."""

import logging

import pyarrow as pa
import pytest

from lightning_asr.batch import Skipped
from lightning_asr.data.audio import AudioError
from lightning_asr.data.skips import SkipLedger
from lightning_asr.data.sources import clean


def test_a_clip_seen_again_counts_once_and_is_named_once(caplog):
    ledger = SkipLedger()
    with caplog.at_level(logging.WARNING, logger="lightning_asr.data.skips"):
        assert ledger.note([Skipped("a.mp3", "missing"), Skipped("b.mp3", "too_long", "31.0 s > 30 s")])
        assert not ledger.note([Skipped("a.mp3", "missing")])  # the next validation meets it again
    assert dict(ledger.counts()) == {"missing": 1, "too_long": 1} and len(ledger) == 2
    assert [r.getMessage() for r in caplog.records] == [
        "skipped a.mp3: missing",
        "skipped b.mp3: too_long (31.0 s > 30 s)",
    ]
    assert ledger.summary() == "data: skipped 2 clip(s): 1 missing, 1 too_long (each named in a warning above)"
    assert set(ledger.clips()) == {"a.mp3", "b.mp3"}


def test_strict_stops_at_the_first_bad_row_naming_it():
    with pytest.raises(AudioError, match="b.mp3"):
        SkipLedger(strict=True).note([Skipped("b.mp3", "undecodable", "not audio")])


def test_clean_drops_empty_transcripts_then_later_copies_keeping_the_first():
    table = pa.table(
        {"audio": ["a.mp3", "b.mp3", "a.mp3", "c.mp3", "c.mp3"], "text": ["one", " ", "one again", "", "three"]}
    )
    kept, skipped = clean(table)
    # c.mp3's first row is empty: its second copy is then the only one and stays.
    assert kept.to_pydict() == {"audio": ["a.mp3", "c.mp3"], "text": ["one", "three"]}
    assert [(s.path, s.reason) for s in skipped] == [
        ("b.mp3", "empty_text"),
        ("c.mp3", "empty_text"),
        ("a.mp3", "duplicate"),
    ]
