"""The optimizer and its schedule: AdamW (torch's, or bitsandbytes' 8-bit) over the adapter's weights (LoRA+'s faster B matrices where asked), a
linear warm-up to the peak learning rate, then a linear decay to 0 at the run's last step (the guide's schedule)."""

import math
from typing import Literal

import bitsandbytes as bnb
import torch
from peft import PeftModel
from peft.optimizers import create_loraplus_optimizer
from transformers import get_linear_schedule_with_warmup


def check_warmup(steps: int | None, share: float | None) -> None:
    """One warm-up, given one way: in optimizer steps, or as a share of the run (which follows its length)."""
    if steps is not None and share is not None:
        raise ValueError(
            f"model.warmup_steps ({steps}) and model.warmup_share ({share:g}) are both set: give one, and "
            "null the other (a config that sets warmup_share over the recipe writes warmup_steps: null)"
        )
    if steps is not None and steps < 0:
        raise ValueError(f"model.warmup_steps: optimizer steps, 0 or more; got {steps}")
    if share is not None and not 0.0 <= share < 1.0:
        raise ValueError(
            f"model.warmup_share: a share of the run's optimizer steps, from 0 up to (not including) 1; got {share:g}"
        )


Optimizer = Literal["adamw", "adamw8bit", "paged_adamw8bit"]


def optimizer_class(name: Optimizer) -> type[torch.optim.Optimizer]:
    """torch's AdamW (the guide's), or bitsandbytes' AdamW with 8-bit states (a quarter of AdamW's state memory),
    paged to host memory under pressure with ``paged_adamw8bit``."""
    if name == "adamw":
        return torch.optim.AdamW
    if name == "adamw8bit":
        return bnb.optim.AdamW8bit
    if name == "paged_adamw8bit":
        return bnb.optim.PagedAdamW8bit
    raise ValueError(f"model.optimizer: {name!r} is not one of adamw, adamw8bit, paged_adamw8bit")


def adamw(
    model: PeftModel, lr: float, weight_decay: float, loraplus_ratio: float = 1.0, name: Optimizer = "adamw"
) -> torch.optim.Optimizer:
    """AdamW (``name``: which implementation) over ``model``'s trainable weights. With ``loraplus_ratio`` above 1,
    LoRA+ (peft's own grouping): every B matrix at ``lr × loraplus_ratio``, the A matrices at ``lr``."""
    cls = optimizer_class(name)
    if loraplus_ratio == 1.0:
        return cls([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    return create_loraplus_optimizer(
        model, cls, lr=lr, loraplus_lr_ratio=loraplus_ratio, loraplus_weight_decay=weight_decay
    )


def linear_schedule(
    optimizer: torch.optim.Optimizer, total_steps: float, warmup_steps: int | None, warmup_share: float | None
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up over ``warmup_steps`` (or ``warmup_share`` of ``total_steps``), then linear decay to 0 at
    ``total_steps``: Lightning's estimate of the run's optimizer steps (``trainer.estimated_stepping_batches``)."""
    if not math.isfinite(total_steps):
        if warmup_share is not None:
            raise ValueError(
                "model.warmup_share needs a run of known length: set trainer.max_epochs or trainer.max_steps"
            )
        total_steps = 10**9  # no end in sight: the decay is too slow to matter
    total = max(int(total_steps), 1)
    warmup = round(warmup_share * total) if warmup_share is not None else warmup_steps or 0
    return get_linear_schedule_with_warmup(optimizer, warmup, total)
