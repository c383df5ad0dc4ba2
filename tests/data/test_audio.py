import numpy as np
import pytest
import soundfile as sf

from lightning_asr.data.audio import AudioError, load_audio, stated_duration
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


def test_non_finite_samples_and_folders_are_named(tmp_path):
    audio = tone(1.0, 16000)
    audio[10] = np.nan
    sf.write(tmp_path / "nan.wav", audio, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav: non_finite .1 NaN or infinite"):
        load_audio(str(tmp_path / "nan.wav"))
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(AudioError, match="dir.wav: not_a_file"):
        load_audio(str(tmp_path / "dir.wav"))


def test_bytes_decode_like_the_file(tmp_path):
    sf.write(tmp_path / "a.flac", tone(1.0, 44100, channels=2), 44100)
    data = (tmp_path / "a.flac").read_bytes()
    np.testing.assert_array_equal(load_audio("a.flac", data=data), load_audio(str(tmp_path / "a.flac")))
    with pytest.raises(AudioError, match="cell.flac: undecodable"):
        load_audio("cell.flac", data=b"garbage")


def test_an_mp3_cut_mid_file_still_states_its_full_length(tmp_path):
    sf.write(tmp_path / "whole.mp3", tone(4.0, 48000), 48000)
    data = (tmp_path / "whole.mp3").read_bytes()
    (tmp_path / "cut.mp3").write_bytes(data[: len(data) * 4 // 10])
    assert stated_duration(str(tmp_path / "whole.mp3")) == pytest.approx(4.0, abs=0.1)
    assert stated_duration(str(tmp_path / "cut.mp3")) == pytest.approx(4.0, abs=0.1)  # the header is intact
    assert len(load_audio(str(tmp_path / "cut.mp3"))) / 16000 < 2.0
    sf.write(tmp_path / "plain.wav", tone(1.0, 16000), 16000)
    assert stated_duration(str(tmp_path / "plain.wav")) is None
