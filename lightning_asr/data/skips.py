"""The skip ledger: every clip or index row that was dropped, counted once by reason and named once in the log."""

import logging
from collections import Counter

from lightning_asr.batch import Skipped
from lightning_asr.data.audio import AudioError

log = logging.getLogger(__name__)


class SkipLedger:
    """Skipped rows by (name, reason). Repeated validations see the same bad clip again: it counts once.

    Args:
        strict: raise on the first skipped row instead (``data.strict``).
    """

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self._items: dict[tuple[str, str], Skipped] = {}

    def note(self, skipped: list[Skipped], trainer=None) -> bool:
        """Record ``skipped``; whether any was new. New ones update the counts ``trainer``'s logger shows
        (``data/skipped_<reason>``)."""
        if skipped and self.strict:
            first = skipped[0]
            raise AudioError(first.path, first.reason, first.detail)
        new = False
        for item in skipped:
            key = (item.path, item.reason)
            if key not in self._items:
                self._items[key] = item
                log.warning("skipped %s", item)
                new = True
        if new and trainer is not None and trainer.logger is not None and trainer.is_global_zero:
            counts = {f"data/skipped_{k}": float(v) for k, v in self.counts().items()}
            trainer.logger.log_metrics(counts, step=trainer.global_step)
        return new

    def counts(self) -> Counter[str]:
        """Distinct skipped rows by reason."""
        return Counter(item.reason for item in self._items.values())

    def clips(self) -> dict[str, Skipped]:
        """Every skipped clip (or index row) by its name."""
        return {item.path: item for item in self._items.values()}

    def summary(self) -> str:
        if not self._items:
            return "data: no clips skipped"
        parts = ", ".join(f"{v} {k}" for k, v in sorted(self.counts().items()))
        return f"data: skipped {len(self._items)} clip(s): {parts} (each named in a warning above)"

    def __len__(self) -> int:
        return len(self._items)
