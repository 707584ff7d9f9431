"""TTS server: Qwen3-TTS (GPU) or eSpeak NG (embedded CPU engine) over HTTP."""
