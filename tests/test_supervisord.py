"""One host: supervisord runs both servers with the repo's supervisord.conf plus one
program per service (gpu_audio/host/supervise.py), as `gpu-audio supervise` does."""

import os
import signal
import subprocess
import sys
import threading

import pytest
import requests

from gpu_audio.host import supervise
from gpu_audio.server.activity import read_activity

from .helpers import ROOT, free_port, pids_with_env, spoken, wait_until

pytestmark = pytest.mark.integration
KEY = "supervisor-test-key"


def test_supervisord_parses_the_config(tmp_path):
    from supervisor.options import ServerOptions

    options = ServerOptions()
    options.realize(args=["-c", str(supervise.write_conf(ROOT / "supervisord.conf", tmp_path))])
    programs = {g.name: g.process_configs[0] for g in options.process_group_configs}
    assert set(programs) == {"tts", "whisperx", "autostop", "proxy", "front"}
    # The front door stops last (lowest priority number), gracefully (nginx's QUIT).
    assert programs["front"].priority < min(programs[s].priority for s in ("tts", "whisperx"))
    assert (
        programs["front"].stopsignal == signal.SIGQUIT
        and "gpu-audio front --supervised" in programs["front"].command
    )
    assert programs["front"].stopwaitsecs == programs["tts"].stopwaitsecs
    assert "gpu-audio autostop" in programs["autostop"].command
    for name, app in (("tts", "tts.app:create_app()"), ("whisperx", "whisperx_server.app:create_app()")):
        config = programs[name]
        assert app in config.command and "gunicorn.conf.py" in config.command
        assert config.directory == str(ROOT) and config.startsecs == 5 and config.startretries == 5
        assert config.stopasgroup and config.killasgroup and config.autorestart
        assert config.stdout_logfile_maxbytes == 0
        from gpu_audio.gunicorn_conf import SUPERVISORD_STOPWAITSECS, graceful_timeout

        assert config.stopwaitsecs == SUPERVISORD_STOPWAITSECS > graceful_timeout  # gunicorn decides
    assert programs["autostop"].directory == programs["proxy"].directory == str(ROOT)
    assert options.nodaemon


def test_the_rendered_conf_goes_to_a_private_folder(tmp_path):
    """What is rendered there is run: a folder others can write is refused."""
    folder = supervise.runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path)})
    assert folder == tmp_path / "gpu-audio" and folder.stat().st_mode & 0o777 == 0o700
    conf = supervise.write_conf(ROOT / "supervisord.conf", folder)
    assert conf.parent == folder and supervise.write_conf(ROOT / "supervisord.conf", folder) == conf
    folder.chmod(0o777)
    with pytest.raises(SystemExit, match="not a private folder"):
        supervise.runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path)})


@pytest.fixture
def supervisor(tmp_path):
    activity = tmp_path / "activity"
    ports = {"TTS_PORT": str(free_port()), "WHISPERX_PORT": str(free_port())}
    env = {
        **os.environ,
        **ports,
        "TTS_ENGINE": "espeak",
        "WHISPERX_ENGINE": "pocketsphinx",
        "TTS_API_KEY": KEY,
        "ACTIVITY_DIR": str(activity),
        "XDG_RUNTIME_DIR": str(tmp_path),
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
    }
    log = open(tmp_path / "supervisord.log", "wb")
    # `gpu-audio supervise`: it renders the configuration, then becomes supervisord.
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpu_audio", "supervise"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    run = type("Run", (), {})()
    run.proc, run.activity, run.marker = proc, str(activity), f"ACTIVITY_DIR={activity}"
    run.tts = f"http://127.0.0.1:{ports['TTS_PORT']}"
    run.wx = f"http://127.0.0.1:{ports['WHISPERX_PORT']}"
    run.log = lambda: (tmp_path / "supervisord.log").read_text(errors="replace")
    try:
        for url in (run.tts, run.wx):
            wait_until(lambda url=url: requests.get(url + "/ready", timeout=2).status_code == 200)
        yield run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        for pid in pids_with_env(run.marker):
            os.kill(pid, signal.SIGKILL)
        log.close()


def test_both_servers_ready_and_serving(supervisor):
    r = requests.post(
        supervisor.tts + "/generate", json={"text": "Hello."}, headers={"X-API-Key": KEY}, timeout=30
    )
    assert r.status_code == 200
    assert requests.get(supervisor.wx + "/health", timeout=5).json()["engine"] == "pocketsphinx"


def test_killed_worker_comes_back(supervisor):
    (old,) = [r["pid"] for r in read_activity(supervisor.activity) if r["server"] == "tts"]
    os.kill(old, signal.SIGKILL)
    new = wait_until(
        lambda: [
            r["pid"] for r in read_activity(supervisor.activity) if r["server"] == "tts" and r["pid"] != old
        ]
    )
    assert new and new[0] != old
    wait_until(lambda: requests.get(supervisor.tts + "/ready", timeout=2).status_code == 200)
    r = requests.post(
        supervisor.tts + "/generate", json={"text": "Back again."}, headers={"X-API-Key": KEY}, timeout=30
    )
    assert r.status_code == 200


def test_sigterm_drains_in_flight_work_then_everything_exits(supervisor):
    text = " ".join(["Every narration line is aligned to its audio, word by word."] * 40)
    b64, audio, _ = spoken(text)
    assert audio.size / 22050 > 120  # long enough to be in flight when the stop comes
    result = {}

    def align():
        result["r"] = requests.post(
            supervisor.wx + "/align",
            json={"audio": b64, "text": text},
            headers={"X-API-Key": KEY},
            timeout=300,
        )

    t = threading.Thread(target=align)
    t.start()
    wait_until(
        lambda: requests.get(supervisor.wx + "/health", timeout=2).json()["in_flight"] == 1, interval=0.02
    )
    supervisor.proc.send_signal(signal.SIGTERM)
    t.join(300)
    assert result["r"].status_code == 200
    assert len(result["r"].json()["words"]) == len(text.split())
    assert supervisor.proc.wait(120) == 0
    assert "whisperx: draining, 1 requests in flight" in supervisor.log()
    wait_until(lambda: not pids_with_env(supervisor.marker), timeout=30)


def test_healthcheck_passes_when_both_are_ready(supervisor):
    env = {
        **os.environ,
        "TTS_PORT": supervisor.tts.rsplit(":", 1)[1],
        "WHISPERX_PORT": supervisor.wx.rsplit(":", 1)[1],
    }
    out = subprocess.run(
        [sys.executable, "-m", "gpu_audio", "healthcheck"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == "ready"
