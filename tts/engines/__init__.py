"""TTS engines. Each module imports its heavy library lazily, inside ``load``."""

ENGINES = {
    "qwen": "tts.engines.qwen:QwenEngine",
    "espeak": "tts.engines.espeak:EspeakEngine",
}


def make_engine(settings):
    """Build (not load) the engine named by ``settings.engine``."""
    from gpu_audio.server.engine import resolve_engine

    return resolve_engine(ENGINES, settings.engine, "TTS_ENGINE")(settings)
