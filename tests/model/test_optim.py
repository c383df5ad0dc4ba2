import json
import math

import lightning as L
import pytest
import torch

from lightning_asr.data import SpeechDataModule
from lightning_asr.model.adapter import save_adapter
from lightning_asr.model.knobs import Decoding, Speed
from lightning_asr.model.lora import LoRA
from lightning_asr.model.module import WhisperLoRA
from lightning_asr.model.optim import adamw, linear_schedule
from tests.conftest import tiny_module, write_common_voice


def fitted(tmp_path, tiny_model, max_steps: int = -1, max_epochs: int | None = None, **module_kwargs) -> L.Trainer:
    """A few real training steps of a tiny model through Lightning (configure_optimizers as the CLI runs it)."""
    root = write_common_voice(tmp_path / "cv", rows_per_split=4)
    module = WhisperLoRA(
        model=tiny_model,
        language="mr",
        quantization="none",
        lora=module_kwargs.pop("lora", LoRA(r=4)),
        decoding=Decoding(max_new_tokens=4),
        speed=Speed(gradient_checkpointing=False),
        validate_before_training=False,
        **module_kwargs,
    )
    data = SpeechDataModule(
        path=str(root), model=tiny_model, language="mr", num_workers=0, batch_size=2, train_split="train"
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        max_epochs=max_epochs,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, data)
    return trainer


def test_warmup_share_is_a_share_of_the_runs_steps(tmp_path, tiny_model):
    """Three epochs of 2 steps: a share of 1/3 warms up over 2 steps, then decays to 0 at step 6."""
    trainer = fitted(tmp_path, tiny_model, max_epochs=3, warmup_steps=None, warmup_share=1 / 3)
    factor = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0]
    assert [factor(step) for step in range(7)] == pytest.approx([0, 0.5, 1, 0.75, 0.5, 0.25, 0])
    assert trainer.global_step == 6


def test_warmup_steps_stay_steps_whatever_the_runs_length(tmp_path, tiny_model):
    trainer = fitted(tmp_path, tiny_model, max_steps=4, warmup_steps=1)
    factor = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0]
    assert [factor(step) for step in range(5)] == pytest.approx([0, 1, 2 / 3, 1 / 3, 0])


def test_one_warmup_is_given_one_way(tiny_model):
    with pytest.raises(ValueError, match="warmup_steps .50. and model.warmup_share .0.1. are both set"):
        WhisperLoRA(model=tiny_model, language="mr", warmup_share=0.1)
    with pytest.raises(ValueError, match="model.warmup_share: a share"):
        WhisperLoRA(model=tiny_model, language="mr", warmup_steps=None, warmup_share=1.5)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match="needs a run of known length"):
        linear_schedule(optimizer, math.inf, None, 0.1)


def test_loraplus_gives_every_b_matrix_the_larger_rate_and_trains_each_weight_once(tiny_model):
    module = tiny_module(tiny_model, quantization="none", lora=LoRA(r=4, alpha=8, dropout=0.0, loraplus_ratio=16))
    optimizer = adamw(module.model, 1e-3, 0.01, module.lora.loraplus_ratio)
    names = {id(p): n for n, p in module.model.named_parameters()}
    rates = {names[id(p)]: group["lr"] for group in optimizer.param_groups for p in group["params"]}
    trainable = [n for n, p in module.model.named_parameters() if p.requires_grad]
    assert sorted(rates) == sorted(trainable) and sum(len(g["params"]) for g in optimizer.param_groups) == len(
        trainable
    )
    assert {rate for n, rate in rates.items() if "lora_A" in n} == {1e-3}
    assert [rate for n, rate in rates.items() if "lora_B" in n] == pytest.approx([16e-3] * (len(trainable) // 2))
    assert {g["weight_decay"] for g in optimizer.param_groups if g["params"]} == {0.01}
    plain = adamw(module.model, 1e-3, 0.0)  # ratio 1: the guide's single group
    assert [g["lr"] for g in plain.param_groups] == [1e-3] and len(plain.param_groups[0]["params"]) == len(trainable)


def test_loraplus_moves_b_faster_in_a_real_fit(tmp_path, tiny_model):
    """Through Lightning: after the same steps from the same start, LoRA+'s B matrices have moved further than the guide's."""
    moved = {}
    for ratio in (1.0, 16.0):
        torch.manual_seed(0)
        trainer = fitted(
            tmp_path / str(ratio),
            tiny_model,
            max_steps=3,
            warmup_steps=0,
            learning_rate=1e-3,
            lora=LoRA(r=4, dropout=0.0, loraplus_ratio=ratio),
        )
        b = [p for n, p in trainer.lightning_module.model.named_parameters() if "lora_B" in n]
        moved[ratio] = sum(p.detach().abs().sum().item() for p in b)  # B starts at zero
    assert moved[16.0] > 4 * moved[1.0] > 0


def test_rslora_scales_by_the_root_of_the_rank_and_the_adapter_says_so(tmp_path, tiny_model):
    module = tiny_module(tiny_model, quantization="none", lora=LoRA(r=16, alpha=8, dropout=0.0, rslora=True))
    q_proj = module.model.get_base_model().model.encoder.layers[0].self_attn.q_proj
    assert q_proj.scaling["default"] == pytest.approx(8 / math.sqrt(16))
    save_adapter(module, tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["use_rslora"] is True
    again = WhisperLoRA(
        model=tiny_model,
        language="mr",
        quantization="none",
        adapter=str(tmp_path / "adapter"),
        speed=Speed(gradient_checkpointing=False),
    )
    again.configure_model()
    assert again.model.get_base_model().model.encoder.layers[0].self_attn.q_proj.scaling["default"] == pytest.approx(
        2.0
    )


def test_loraplus_ratio_must_be_positive():
    with pytest.raises(ValueError, match="model.lora.loraplus_ratio"):
        LoRA(loraplus_ratio=0)


def test_dora_with_8bit_adamw_trains_through_a_fit_and_its_adapter_reloads_in_plain_peft(tmp_path, tiny_model):
    """``model.lora.dora`` and ``model.optimizer: adamw8bit`` on the unquantized base, through a real Lightning fit: the
    optimizer is bitsandbytes', DoRA's magnitudes train, and the saved adapter gives the same outputs in plain peft."""
    import bitsandbytes as bnb
    from peft import PeftModel

    from lightning_asr.model.whisper import load_base

    root = write_common_voice(tmp_path / "cv")
    module = WhisperLoRA(
        model=tiny_model,
        language="mr",
        quantization="none",
        lora=LoRA(r=4, dora=True),
        optimizer="adamw8bit",
        learning_rate=1e-2,
        warmup_steps=0,
        validate_before_training=False,
        speed=Speed(gradient_checkpointing=False),
        decoding=Decoding(max_new_tokens=4),
    )
    data = SpeechDataModule(path=str(root), model=tiny_model, language="mr", num_workers=0, batch_size=2)
    module.configure_model()
    magnitudes = {n: p.detach().clone() for n, p in module.model.named_parameters() if "lora_magnitude" in n}
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(module, data)
    assert isinstance(trainer.optimizers[0], bnb.optim.AdamW8bit)
    now = dict(module.model.named_parameters())
    assert magnitudes and any(not torch.equal(now[n], before) for n, before in magnitudes.items())
    save_adapter(module, tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(load_base(tiny_model, "none"), tmp_path / "adapter").eval()
    module.model.eval()
    features, labels = torch.randn(1, 80, 400), torch.tensor([[50258, 50320, 50359, 50363, 400, 50257]])
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(input_features=features, decoder_input_ids=labels).logits,
            module.model(input_features=features, decoder_input_ids=labels).logits,
        )


def test_an_optimizer_name_we_do_not_have_fails_at_parse_time(tiny_model):
    with pytest.raises(ValueError, match="model.optimizer: 'sgd' is not one of adamw, adamw8bit, paged_adamw8bit"):
        WhisperLoRA(model=tiny_model, language="mr", optimizer="sgd")


@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_dora_on_a_kbit_base_is_refused_at_parse_time(tiny_model, quantization):
    with pytest.raises(
        ValueError, match=f"model.lora.dora: true needs model.quantization: none \\(got '{quantization}'\\)"
    ):
        WhisperLoRA(model=tiny_model, language="mr", quantization=quantization, lora=LoRA(dora=True))
