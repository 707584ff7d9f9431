"""TTS engines. Each module imports its heavy library lazily, inside ``load``."""

ENGINES = {
    "qwen": "tts.engines.qwen:QwenEngine",
    "espeak": "tts.engines.espeak:EspeakEngine",
}


def make_engine(settings):
    """Build (not load) the engine named by ``settings.engine`` (in its own process
    unless ENGINE_PROCESS=0)."""
    from gpu_audio.server.engine import build_engine

    return build_engine(ENGINES, settings, "TTS_ENGINE")
