"""Waveform augmentation (speed perturbation, additive noise): what it does to a known input, that
its draws are reproducible, and that only the training split sees it."""

import numpy as np
import pytest
import soundfile as sf

from lightning_asr.batch import SAMPLING_RATE
from lightning_asr.data import SpeechDataModule
from lightning_asr.data.sampling import ShardSampler
from lightning_asr.data.sources import DataConfigError
from lightning_asr.data.transforms import AudioAugment, add_noise, change_speed
from tests.conftest import tone, write_common_voice


def peak_hz(waveform: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(waveform))
    return float(np.fft.rfftfreq(len(waveform), 1 / SAMPLING_RATE)[spectrum.argmax()])


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_scales_duration_and_pitch_by_the_factor(factor):
    clip = tone(2.0, SAMPLING_RATE)  # a 220 Hz tone
    fast = change_speed(clip, factor)
    assert abs(len(fast) - len(clip) / factor) <= 1
    assert peak_hz(fast) == pytest.approx(220 * factor, abs=1.0)


def test_noise_is_mixed_at_the_asked_snr():
    clip = tone(2.0, SAMPLING_RATE)
    noise = np.random.default_rng(0).standard_normal(len(clip)).astype(np.float32)
    for snr in (0.0, 10.0, 25.0):
        mixed = add_noise(clip, noise, snr)
        measured = 10 * np.log10(np.mean(clip**2) / np.mean((mixed - clip) ** 2))
        assert measured == pytest.approx(snr, abs=0.05)


def test_draws_follow_the_seed_and_stay_in_range(tmp_path):
    sf.write(tmp_path / "hum.wav", 0.2 * np.sin(2 * np.pi * 50 * np.arange(8000) / SAMPLING_RATE), SAMPLING_RATE)
    augment = AudioAugment(
        speed_factors=[0.9, 1.1], noise_prob=1.0, noise_dir=str(tmp_path), snr_min_db=5, snr_max_db=15
    )
    clip = tone(1.5, SAMPLING_RATE)
    out = [augment(clip, np.random.default_rng([3, 0, i]), max_seconds=30) for i in range(12)]
    again = [augment(clip, np.random.default_rng([3, 0, i]), max_seconds=30) for i in range(12)]
    assert all(np.array_equal(a, b) for a, b in zip(out, again))  # same seed, epoch, index: same clip
    assert {round(len(clip) / len(o), 1) for o in out} == {0.9, 1.1}  # both factors drawn
    for o in out:
        clean = change_speed(clip, len(clip) / len(o))[: len(o)]
        snr = 10 * np.log10(np.mean(clean**2) / np.mean((o - clean) ** 2))
        assert 5 - 0.1 <= snr <= 15 + 0.1
    # A 1.5 s clip with 0.9 would pass a 1.6 s window: only 1.1 is drawn.
    assert all(len(augment(clip, np.random.default_rng(i), max_seconds=1.6)) < len(clip) for i in range(8))


def test_knobs_are_checked(tmp_path):
    for bad, match in (
        (dict(speed_factors=[3.0]), "speed_factors"),
        (dict(noise_prob=1.5), "noise_prob"),
        (dict(snr_min_db=20, snr_max_db=10), "snr_min_db"),
        (dict(noise_prob=0.5, noise_dir=str(tmp_path)), "noise_dir: no"),
    ):
        with pytest.raises(ValueError, match=f"data.augment.{match}"):
            AudioAugment(**bad)


def test_sampler_hands_each_index_its_epoch_and_resumes_with_it():
    data = list(range(10))
    sampler = ShardSampler(data, 1, 0, shuffle=True, seed=1, pad=True, with_epoch=True)
    sampler.set_epoch(2)
    keys = list(sampler)
    assert sorted(i for i, _ in keys) == data and {e for _, e in keys} == {2}
    resumed = ShardSampler(data, 1, 0, shuffle=True, seed=1, pad=True, with_epoch=True)
    resumed.set_epoch(2)
    resumed.start = 4
    assert list(resumed) == keys[4:]


def test_only_training_clips_are_augmented_and_reproducibly(tmp_path, tiny_model):
    root = write_common_voice(tmp_path / "cv", rows_per_split=3)

    def module(**augment) -> SpeechDataModule:
        dm = SpeechDataModule(
            path=str(root),
            model=tiny_model,
            language="mr",
            train_split="train",
            val_split="train",
            num_workers=0,
            augment=AudioAugment(**augment),
            seed=5,
        )
        dm.setup("fit")
        return dm

    plain, noisy = module(), module(speed_factors=[0.9], noise_prob=1.0, snr_min_db=0, snr_max_db=0)
    for i in range(3):
        clean, train = plain.datasets["train"][i], noisy.datasets["train"][(i, 0)]
        assert train["duration"] == pytest.approx(clean["duration"] / 0.9, abs=1e-3)
        assert not np.array_equal(train["input_features"], clean["input_features"])
        val = noisy.datasets["val"][i]  # the same clips as validation: untouched
        assert val["duration"] == clean["duration"] and np.array_equal(val["input_features"], clean["input_features"])
    assert np.array_equal(
        noisy.datasets["train"][(1, 0)]["input_features"],
        module(**noisy.hparams.augment).datasets["train"][(1, 0)]["input_features"],
    )
    assert not np.array_equal(
        noisy.datasets["train"][(1, 0)]["input_features"], noisy.datasets["train"][(1, 1)]["input_features"]
    )
    # Through the loader: the training sampler asks for (index, epoch), evaluation for plain indices.
    assert isinstance(next(iter(noisy.train_dataloader().sampler)), tuple)
    assert isinstance(next(iter(noisy.val_dataloader().sampler)), int)
    assert isinstance(next(iter(plain.train_dataloader().sampler)), int)


def test_a_noise_folder_without_audio_is_a_config_error(tmp_path, tiny_model):
    with pytest.raises(DataConfigError, match="data.augment.noise_dir"):
        SpeechDataModule(path="unused", model=tiny_model, augment={"noise_prob": 0.5, "noise_dir": str(tmp_path)})
