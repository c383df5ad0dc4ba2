"""Word and character error rates: torchmetrics' metrics (state, DDP sync, logging) with edit
distances from rapidfuzz (C++) instead of torchmetrics' pure-Python loop.

Validation decodes up to ``max_new_tokens`` per clip, and a model early in training (or a random
one) fills all of them: torchmetrics' loop then took 0.9 s for the CER of one 256-clip batch on
this project's CI machine, rapidfuzz 0.04 s. Same definitions (whitespace-split words; characters),
same numbers. And the paired bootstrap that says whether two adapters' WERs differ beyond noise.
"""

from collections.abc import Sequence

import numpy as np
import torch
from rapidfuzz.distance import Levenshtein
from torchmetrics import MeanMetric
from torchmetrics.text import CharErrorRate as _CharErrorRate
from torchmetrics.text import WordErrorRate as _WordErrorRate

from lightning_asr.text import normalize


def _listed(texts: str | list[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


class WordErrorRate(_WordErrorRate):
    def update(self, preds: str | list[str], target: str | list[str]) -> None:
        for pred, ref in zip(_listed(preds), _listed(target)):
            words = ref.split()
            self.errors += Levenshtein.distance(pred.split(), words)
            self.total += len(words)


class CharErrorRate(_CharErrorRate):
    def update(self, preds: str | list[str], target: str | list[str]) -> None:
        for pred, ref in zip(_listed(preds), _listed(target)):
            self.errors += Levenshtein.distance(pred, ref)
            self.total += len(ref)


def paired_bootstrap(
    errors_a: list[list[int]], errors_b: list[list[int]], words: list[int], samples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """WER(a) - WER(b) over the same clips, and its 95 % bootstrap interval: each side's per-clip
    word errors (one list per seed) averaged over its seeds, clips resampled with replacement.
    ``words``: each clip's reference words. Two adapters differ beyond noise where the interval
    excludes 0 (benchmarks/quality.py compares every config with the guide's recipe this way)."""
    a, b, n = np.mean(errors_a, axis=0), np.mean(errors_b, axis=0), np.asarray(words, dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(n), size=(samples, len(n)))
    diffs = (a[picks].sum(1) - b[picks].sum(1)) / np.maximum(n[picks].sum(1), 1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float((a.sum() - b.sum()) / max(n.sum(), 1)), float(low), float(high)


def error_rates(refs: list[str], preds: list[str], language: str | None) -> dict[str, float]:
    """The three numbers validation logs (``wer`` as written, ``wer_norm``, ``cer`` on normalised
    text), for transcripts decoded elsewhere: an exported model in its own runtime."""
    norm_refs, norm_preds = [normalize(r, language) for r in refs], [normalize(p, language) for p in preds]
    wer, wer_norm, cer = WordErrorRate(), WordErrorRate(), CharErrorRate()
    wer.update(preds, refs)
    wer_norm.update(norm_preds, norm_refs)
    cer.update(norm_preds, norm_refs)
    return {"wer": float(wer.compute()), "wer_norm": float(wer_norm.compute()), "cer": float(cer.compute())}


def score_set() -> torch.nn.ModuleDict:
    """WER (orthographic and normalised), CER and the degenerate share: torchmetrics objects, synced under DDP."""
    return torch.nn.ModuleDict(
        {"wer": WordErrorRate(), "wer_norm": WordErrorRate(), "cer": CharErrorRate(), "degenerate": MeanMetric()}
    )


def wrote_words(text: str, language: str | None) -> bool:
    """Whether a transcript of audio without speech holds any word (after the language's normaliser: a lone "." is
    none): what ``val_nospeech/words`` counts."""
    return bool(normalize(text, language).split())


NO_SPEECH = "val_nospeech"  # generated clips without speech (data.no_speech.eval_clips)


class Scoreboard(torch.nn.Module):
    """Validation's and test's scores under their logged prefixes.

    Each evaluation dataloader has a prefix: ``val`` (the target), ``val_retain`` (``data.retain``), ``val_nospeech``
    (``data.no_speech.eval_clips``: the share of clips with any words written) or, with several sources
    (``data.sources``), ``val/<source>``. A source's scores are also pooled into ``val/*`` where
    ``pooled`` says so (the sources in the target language), so the monitored ``val/wer_norm`` stays one number.

    Args:
        prefixes: each evaluation dataloader's prefix, in dataloader order.
        pooled: the prefixes also counted into ``val/*``.
    """

    def __init__(self, prefixes: Sequence[str] | None = None, pooled: Sequence[str] = ()) -> None:
        super().__init__()
        # Named by the DataModule, every set is logged at every validation, used on this rank or not: under DDP a rank
        # whose shard of a small set is empty must still join the others' sync of it.
        self.logged = {"val", "test", *(prefixes or ())}
        self.prefixes, self.pooled = list(prefixes or ("val", "val_retain")), set(pooled)
        # ModuleDict keys cannot hold '/': a source's scores are kept under its prefix with '@' instead.
        names = {"val", "test", *(p.replace("/", "@") for p in self.prefixes)}
        self.sets = torch.nn.ModuleDict({name: score_set() for name in sorted(names - {NO_SPEECH})})
        if NO_SPEECH in names:  # no reference words: the share of clips with any written, and of runaway ones
            self.sets[NO_SPEECH] = torch.nn.ModuleDict({"words": MeanMetric(), "degenerate": MeanMetric()})

    def update(self, stage: str, dataloader_idx: int, preds: list[str], refs: list[str], language, degenerate) -> None:
        """One batch's transcripts against its references, into the scores its dataloader counts toward."""
        prefix = "test" if stage == "test" else self.prefixes[dataloader_idx]
        if prefix == NO_SPEECH:
            self.sets[NO_SPEECH]["words"].update(
                torch.tensor([wrote_words(p, language) for p in preds], dtype=torch.float32)
            )
            self.sets[NO_SPEECH]["degenerate"].update(torch.tensor(degenerate, dtype=torch.float32))
            return
        targets = [prefix] + (["val"] if prefix in self.pooled else [])
        norm_preds, norm_refs = [normalize(p, language) for p in preds], [normalize(r, language) for r in refs]
        for name in targets:
            scores = self.sets[name.replace("/", "@")]
            scores["wer"].update(preds, refs)
            scores["wer_norm"].update(norm_preds, norm_refs)
            scores["cer"].update(norm_preds, norm_refs)
            scores["degenerate"].update(torch.tensor(degenerate, dtype=torch.float32))

    def log(self, module, stage: str, direct: bool) -> None:
        """Every score this stage updated, as ``<prefix>/<name>``; the target's ``wer`` on the progress bar."""
        for key, scores in self.sets.items():
            prefix = key.replace("@", "/")
            if (stage == "test") != (prefix == "test"):
                continue
            if prefix not in self.logged and not next(iter(scores.values())).update_called:
                continue
            for name, metric in scores.items():
                bar = name == "wer" and prefix in ("val", "test")
                module.log(f"{prefix}/{name}", metric, prog_bar=bar, add_dataloader_idx=False, logger=direct)
