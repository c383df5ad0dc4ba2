"""Module paths from before the layers had folders: checkpoints and code written against them still load."""

import pickle

import pytest

import lightning_asr  # noqa: F401 (installs the finder)
from lightning_asr.callbacks import ValidationReport
from lightning_asr.data.transforms import AudioAugment
from lightning_asr.model import knobs
from lightning_asr.model.spec_augment import SpecAugment


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("lightning_asr.module", "WhisperLoRA", "lightning_asr.model.module"),
        ("lightning_asr.args", "Speed", "lightning_asr.model.knobs"),
        ("lightning_asr.lora", "LoRA", "lightning_asr.model.lora"),
        ("lightning_asr.audio", "load_audio", "lightning_asr.data.audio"),
        ("lightning_asr.audio", "SAMPLING_RATE", "lightning_asr.batch"),
        ("lightning_asr.export", "whisper_window", "lightning_asr.deploy.export"),
        ("lightning_asr.tools", "TranscriptWriter", "lightning_asr.deploy.transcribe"),
        ("lightning_asr.dataset", "LABEL_PAD", "lightning_asr.batch"),
        ("lightning_asr.augment", "SpecAugment", "lightning_asr.model.spec_augment"),
        ("lightning_asr.augment", "AudioAugment", "lightning_asr.data.transforms"),
    ],
)
def test_an_old_path_gives_the_object_now_at_the_new_one(old, name, new):
    import importlib

    assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(new), name)


def test_knobs_pickled_under_their_old_module_unpickle_as_the_new_classes():
    # What a checkpoint written before the folders holds for its hyperparameters (protocol 0 names the module).
    for obj, new, old in (
        (knobs.Speed(compile=True), b"lightning_asr.model.knobs", b"lightning_asr.args"),
        (SpecAugment(time_prob=0.05), b"lightning_asr.model.spec_augment", b"lightning_asr.augment"),
        (AudioAugment(noise_prob=0.5), b"lightning_asr.data.transforms", b"lightning_asr.augment"),
    ):
        blob = pickle.dumps(obj, protocol=0)
        assert new in blob
        assert pickle.loads(blob.replace(new, old)) == obj


def test_an_unknown_old_name_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        import lightning_asr.no_such_module  # noqa: F401


def test_a_checkpoint_from_before_the_report_callback_keeps_its_wer_history():
    report = ValidationReport()
    report.on_load_checkpoint(None, None, {"wer_history": [[0, 1.2, 0.9], [60, 0.8, 0.5]]})
    assert report.history == [(0, 1.2, 0.9), (60, 0.8, 0.5)]
    report.load_state_dict(report.state_dict())
    assert report.history == [(0, 1.2, 0.9), (60, 0.8, 0.5)]
