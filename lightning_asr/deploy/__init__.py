"""After training: transcribing files (long-form, subtitles) and exporting a merged model for transformers and
CTranslate2."""
