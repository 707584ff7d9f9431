"""Speech-recognition engines. Each imports its heavy library lazily, inside ``load``."""

ENGINES = {
    "whisperx": "whisperx_server.engines.whisperx:WhisperXEngine",
    "pocketsphinx": "whisperx_server.engines.pocketsphinx:PocketsphinxEngine",
}


def make_engine(settings):
    """Build (not load) the engine named by ``settings.engine`` (in its own process
    unless ENGINE_PROCESS=0)."""
    from gpu_audio.server.engine import build_engine

    return build_engine(ENGINES, settings, "WHISPERX_ENGINE")
