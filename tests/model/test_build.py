"""build_model without a Trainer: what export, the benchmarks and a notebook get from it."""

import torch
from peft import PeftModel

from lightning_asr.model.build import build_model
from lightning_asr.model.knobs import Speed
from lightning_asr.model.lora import LoRA
from lightning_asr.model.spec_augment import SpecAugment


def test_build_model_gives_a_training_lora_over_a_frozen_int8_base(tiny_model):
    model = build_model(
        tiny_model, "int8", torch.device("cpu"), lora=LoRA(r=4), speed=Speed(), spec_augment=SpecAugment(time_prob=0.05)
    )
    assert isinstance(model, PeftModel) and model.training
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert {name.split(".")[-3] for name in trainable} == {"lora_A", "lora_B"}
    base = model.get_base_model()
    assert base.config.mask_time_prob == 0.05  # SpecAugment applied to the base's own masking
    assert base.model.encoder.gradient_checkpointing  # the recipe's checkpointing, on the layers that train
    features = torch.randn(2, base.config.num_mel_bins, 2 * base.config.max_source_positions)
    labels = torch.tensor([[50258, 50320, 50359, 50363, 400, 50257]] * 2)
    loss = model(input_features=features, labels=labels).loss
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_build_model_trains_an_existing_adapter_on(tiny_model, tmp_path):
    first = build_model(tiny_model, "none", torch.device("cpu"), lora=LoRA(r=4), speed=Speed())
    with torch.no_grad():
        for name, p in first.named_parameters():
            if "lora_B" in name:
                p.fill_(0.01)
    first.save_pretrained(tmp_path / "adapter")
    again = build_model(
        tiny_model, "none", torch.device("cpu"), lora=LoRA(r=4), speed=Speed(), adapter=str(tmp_path / "adapter")
    )
    b = {n: p for n, p in again.named_parameters() if "lora_B" in n}
    assert b and all(p.requires_grad and torch.all(p == 0.01) for p in b.values())
