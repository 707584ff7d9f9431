"""Speech-recognition engines. Each imports its heavy library lazily, inside ``load``."""

from gpu_audio import services
from gpu_audio.server.engine_process import build_engine

ENGINES = {
    "whisperx": "whisperx_server.engines.whisperx:WhisperXEngine",
    "pocketsphinx": "whisperx_server.engines.pocketsphinx:PocketsphinxEngine",
}


def make_engine(settings):
    """Build (not load) the engine named by ``settings.engine`` (in its own process
    unless ENGINE_PROCESS=0)."""
    return build_engine(ENGINES, settings, services.WHISPERX.engine_variable)
