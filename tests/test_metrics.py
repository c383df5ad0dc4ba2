import random

import pytest
import torchmetrics.text

from lightning_asr.metrics import CharErrorRate, WordErrorRate

ALPHABET = list("abc ") + ["क", "ा", "र", "्", "\t", "  "]


def texts(n: int, seed: int) -> list[str]:
    """Mixed scripts, tabs and runs of spaces, and one empty text."""
    rng = random.Random(seed)
    return [""] + ["".join(rng.choices(ALPHABET, k=rng.randint(1, 40))) for _ in range(n - 1)]


@pytest.mark.parametrize("ours, theirs", [(WordErrorRate, torchmetrics.text.WordErrorRate),
                                          (CharErrorRate, torchmetrics.text.CharErrorRate)])
def test_error_rates_match_torchmetrics(ours, theirs):
    ours, theirs = ours(), theirs()
    for seed in range(3):  # several updates accumulate
        preds, refs = texts(50, seed), texts(50, seed + 100)
        ours.update(preds, refs)
        theirs.update(preds, refs)
    ours.update("a b", "a c")  # single strings too
    theirs.update("a b", "a c")
    assert ours.errors == theirs.errors and ours.total == theirs.total
    assert ours.compute() == theirs.compute() > 0
