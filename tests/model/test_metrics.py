import random

import pytest
import torchmetrics.text

from lightning_asr.model.metrics import CharErrorRate, WordErrorRate

ALPHABET = list("abc ") + ["क", "ा", "र", "्", "\t", "  "]


def texts(n: int, seed: int) -> list[str]:
    """Mixed scripts, tabs and runs of spaces, and one empty text."""
    rng = random.Random(seed)
    return [""] + ["".join(rng.choices(ALPHABET, k=rng.randint(1, 40))) for _ in range(n - 1)]


@pytest.mark.parametrize(
    "ours, theirs", [(WordErrorRate, torchmetrics.text.WordErrorRate), (CharErrorRate, torchmetrics.text.CharErrorRate)]
)
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


def test_paired_bootstrap_interval_covers_the_difference_and_shrinks_with_clips():
    import numpy as np

    from lightning_asr.model.metrics import paired_bootstrap

    rng = np.random.default_rng(0)
    words = [5] * 400
    b = rng.integers(0, 3, size=(3, 400)).tolist()
    a = (np.asarray(b) + (rng.random((3, 400)) < 0.5)).tolist()  # about half an error more per clip
    diff, low, high = paired_bootstrap(a, b, words)
    assert low < diff < high and 0.08 < diff < 0.12 and low > 0  # ~0.5 / 5 words, clearly worse
    _, low_few, high_few = paired_bootstrap([x[:40] for x in a], [x[:40] for x in b], words[:40])
    assert high_few - low_few > 2 * (high - low)
    same = paired_bootstrap(b, b, words)
    assert same == (0.0, 0.0, 0.0)
