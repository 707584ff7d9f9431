"""WhisperX server: transcription and forced alignment (WhisperX on GPU, pocketsphinx on CPU)."""
