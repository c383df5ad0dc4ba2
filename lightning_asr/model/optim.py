"""The optimizer and its schedule: AdamW over the adapter's weights (LoRA+'s faster B matrices where asked), a
linear warm-up to the peak learning rate, then a linear decay to 0 at the run's last step (the guide's schedule)."""

import math

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


def adamw(model: PeftModel, lr: float, weight_decay: float, loraplus_ratio: float = 1.0) -> torch.optim.Optimizer:
    """AdamW over ``model``'s trainable weights. With ``loraplus_ratio`` above 1, LoRA+ (peft's own grouping): every
    B matrix at ``lr × loraplus_ratio``, the A matrices at ``lr``."""
    if loraplus_ratio == 1.0:
        return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    return create_loraplus_optimizer(
        model, torch.optim.AdamW, lr=lr, loraplus_lr_ratio=loraplus_ratio, loraplus_weight_decay=weight_decay
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
