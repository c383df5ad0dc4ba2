from transformers.models.whisper.english_normalizer import BasicTextNormalizer

from lightning_asr.text import clean_transcript, is_degenerate, normalize

MARATHI = "आईचे आजारपण वाढत चालले, म्हणून ती घरी गेली। तू कुठे आहेस?"


def test_normalize_keeps_marathi_words_whole():
    words = normalize(MARATHI).split()
    assert words == ["आईचे", "आजारपण", "वाढत", "चालले", "म्हणून", "ती", "घरी", "गेली", "तू", "कुठे", "आहेस"]
    # Whisper's own basic normalizer drops every vowel sign / virama and splits the words there.
    fragments = BasicTextNormalizer()(MARATHI).split()
    assert len(fragments) > len(words) and "आईचे" not in fragments


def test_normalize_removes_punctuation_danda_and_case():
    assert normalize("Hello, World! «Quoted» — text.") == "hello world quoted text"
    assert normalize("मी आलो॥ तो गेला।") == "मी आलो तो गेला"


def test_invisible_characters_and_nbsp_do_not_change_the_words():
    plain = "भावनात्मक विषय पद्यात आणि वर्णनात्मक विषय गद्यात अशी याची रचना असते."
    odd = "\ufeffभावनात्\u200dमक विषय पद्यात\u00a0आणि वर्णनात्मक विषय गद्यात अशी याची रचना असते.\u200b"
    assert clean_transcript(odd) == plain
    assert normalize(odd) == normalize(plain)


def test_clean_transcript_keeps_punctuation_and_case():
    assert clean_transcript('  "No,  I don\'t," was the blunt reply. ') == '"No, I don\'t," was the blunt reply.'


def test_degenerate_detects_runaway_and_loops():
    assert is_degenerate(list(range(10)), max_new_tokens=10)  # hit the cap
    assert is_degenerate([5, 6, 7, 5, 6, 7, 5, 6, 7], max_new_tokens=100)  # an n-gram loop
    assert not is_degenerate([1, 2, 3, 4, 5, 6, 7], max_new_tokens=100)
    assert not is_degenerate([1, 1, 2], max_new_tokens=100)  # a doubled token is normal speech


def test_english_scores_digits_and_number_words_as_one_word():
    for spoken in ("5.", "Five.", "five", " FIVE! "):
        assert normalize(spoken, "en") == "5"
    assert normalize("[BLANK_AUDIO]", "en") == "" and normalize("See you later.", "en") == "see you later"
    assert normalize("Five.") == "five"  # other languages keep their words
    assert normalize("मी आलो।", "mr") == normalize("मी आलो।")
