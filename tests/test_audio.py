import numpy as np
import pytest
import soundfile as sf

from lightning_asr.audio import AudioError, load_audio
from tests.conftest import tone


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
def test_any_rate_and_format_becomes_16k_mono(tmp_path, rate, fmt):
    path = tmp_path / f"clip.{fmt}"
    sf.write(path, tone(2.0, rate, channels=2), rate)
    audio = load_audio(str(path))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 32000) <= 16
    # The 220 Hz tone survives resampling: its spectrum peaks there.
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / len(audio) - 220) < 2


def test_errors_name_the_file_and_reason(tmp_path):
    with pytest.raises(AudioError, match="missing.mp3: missing"):
        load_audio(str(tmp_path / "missing.mp3"))
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty.mp3: empty"):
        load_audio(str(empty))
    page = tmp_path / "page.mp3"
    page.write_text("<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>")
    with pytest.raises(AudioError, match="page.mp3: undecodable") as err:
        load_audio(str(page))
    assert err.value.reason == "undecodable"
