import os
import shutil
import tempfile

# Files a test run caches (the copies of a PEM ca_cert) go to a folder of this run,
# not the user's ~/.cache.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="gpu-audio-tests-cache-")

# No test may reach AWS or the EC2 metadata address (169.254.169.254): fake
# credentials, metadata off (tests that need IMDS serve it on loopback themselves).
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9",
    }
)
os.environ.pop("AWS_PROFILE", None)

import pytest

from gpu_audio.config import TTSSettings
from tts.app import create_app
from tts.engines.espeak import EspeakEngine

from .fakes import RecordingEngine
from .helpers import Gunicorn


@pytest.fixture(scope="session", autouse=True)
def _no_server_outlives_the_session():
    yield
    for server in Gunicorn.started:
        server.stop()
    shutil.rmtree(os.environ["XDG_CACHE_HOME"], ignore_errors=True)


@pytest.fixture
def make_settings(tmp_path):
    def make(**changes):
        base = dict(engine="espeak", load_in_background=False, activity_dir=str(tmp_path / "activity"))
        base.update(changes)
        return TTSSettings(**base)

    return make


@pytest.fixture
def make_client(make_settings):
    """A test client of the real TTS app with the given engine and settings."""

    def make(engine=None, **changes):
        settings = make_settings(**changes)
        app = create_app(settings, engine or EspeakEngine(settings))
        return app.test_client()

    return make


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def recorder():
    return RecordingEngine()


@pytest.fixture
def rec_client(make_client, recorder):
    return make_client(recorder)


@pytest.fixture
def make_wx_client(tmp_path):
    """A test client of the real WhisperX app (pocketsphinx unless an engine is given)."""
    from gpu_audio.config import WhisperXSettings
    from whisperx_server.app import create_app as create_wx_app

    def make(engine=None, **changes):
        base = dict(engine="pocketsphinx", load_in_background=False, activity_dir=str(tmp_path / "activity"))
        base.update(changes)
        settings = WhisperXSettings(**base)
        return create_wx_app(settings, engine).test_client()

    return make


@pytest.fixture(scope="session")
def shared_sphinx():
    """One loaded pocketsphinx engine for the session (decoders take ~0.5 s to build)."""
    from whisperx_server.engines.pocketsphinx import PocketsphinxEngine

    engine = PocketsphinxEngine()
    engine.load()
    return engine


@pytest.fixture
def wx(make_wx_client, shared_sphinx):
    return make_wx_client(shared_sphinx)
