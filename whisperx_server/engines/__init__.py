"""Speech-recognition engines. Each imports its heavy library lazily, inside ``load``."""

ENGINES = {
    "whisperx": "whisperx_server.engines.whisperx:WhisperXEngine",
    "pocketsphinx": "whisperx_server.engines.pocketsphinx:PocketsphinxEngine",
}


def make_engine(settings):
    """Build (not load) the engine named by ``settings.engine``."""
    from gpu_audio.server.engine import resolve_engine

    return resolve_engine(ENGINES, settings.engine, "WHISPERX_ENGINE")(settings)
