"""The training loss without the batch's full logits: Whisper's cross-entropy over the label
tokens only, a chunk of tokens at a time.

transformers' ``labels=`` path projects every position of the padded batch onto the 51,865-token
vocabulary and keeps those logits, in bf16 and again in fp32, until backward: at 30 s packed
windows (~300 label tokens each) that is ~0.25 GiB a window, more than the checkpointed encoder
and decoder together. Here padding is never projected, and with gradient checkpointing each chunk's
logits are recomputed in backward, so at most one chunk's exist at a time. The loss is the same
mean over the same tokens; only the order of the sum differs.
"""

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers import WhisperForConditionalGeneration
from transformers.models.whisper.modeling_whisper import shift_tokens_right

from lightning_asr.batch import LABEL_PAD

# 512 tokens' fp32 logits and their gradient are ~0.2 GiB: small beside a 5 GiB budget, and a
# 512 x d_model x 51,865 matmul still fills an H200.
CHUNK_TOKENS = 512


def token_loss(
    whisper: WhisperForConditionalGeneration,
    labels: torch.Tensor,
    recompute: bool,
    chunk_tokens: int = CHUNK_TOKENS,
    **inputs: torch.Tensor | tuple | None,
) -> torch.Tensor:
    """Mean cross-entropy of ``labels`` (``LABEL_PAD`` where padded) given ``inputs`` (``input_features``
    and ``attention_mask``, or ``encoder_outputs``), as ``whisper(**inputs, labels=labels).loss``.

    ``recompute``: recompute each chunk's logits in backward instead of keeping them.
    """
    config = whisper.config
    if labels.shape[1] > config.max_target_positions:
        raise ValueError(f"labels of {labels.shape[1]} tokens: Whisper's decoder holds {config.max_target_positions}")
    decoder_input_ids = shift_tokens_right(labels, config.pad_token_id, config.decoder_start_token_id)
    hidden = whisper.model(**inputs, decoder_input_ids=decoder_input_ids, use_cache=False).last_hidden_state
    keep = labels != LABEL_PAD
    hidden, targets = hidden[keep], labels[keep]
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, len(targets), chunk_tokens):
        part = hidden[start : start + chunk_tokens], targets[start : start + chunk_tokens]
        total = total + (
            checkpoint(summed_loss, whisper.proj_out, *part, use_reentrant=False)
            if recompute
            else summed_loss(whisper.proj_out, *part)
        )
    # As CrossEntropyLoss's mean: NaN when no token counts (the step is then skipped as non-finite).
    return total / keep.sum()


def summed_loss(proj_out: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(proj_out(hidden).float(), targets, reduction="sum")
