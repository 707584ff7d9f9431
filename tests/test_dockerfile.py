"""What can be checked of the image without a Docker engine."""

import os
import re
import shlex
import subprocess
import sys

from .helpers import ROOT, free_port

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name):
    text = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in text.splitlines() if line.startswith(name + " ")]


def test_every_copied_path_exists():
    copies = instructions("COPY")
    assert copies
    for args in copies:
        *sources, _ = shlex.split(args)
        for source in sources:
            assert (ROOT / source).exists(), source


def test_dockerignore_keeps_what_is_copied():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for args in instructions("COPY"):
        *sources, _ = shlex.split(args)
        assert not set(sources) & set(ignored)


def test_image_commands_exist_in_the_package():
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "gpu_audio", *a],
        cwd=ROOT,  # noqa: E731
        capture_output=True,
        text=True,
    )
    assert "gpu-audio download-models" in DOCKERFILE
    assert '["gpu-audio", "healthcheck"]' in DOCKERFILE
    for command in ("download-models", "healthcheck", "supervise"):
        assert run(command, "--help").returncode == 0
    assert "gpu-audio download-models && exec gpu-audio supervise" in DOCKERFILE
    assert re.search(r"HEALTHCHECK .*--start-period=\d+s", DOCKERFILE.replace("\\\n", " "))
    assert "USER app" in DOCKERFILE
    # The front door is the only public listener; the servers bind loopback.
    assert instructions("EXPOSE") == ["443"] and "FRONT=1" in DOCKERFILE and "FRONT_PORT=443" in DOCKERFILE
    assert "BIND_HOST=127.0.0.1" in DOCKERFILE and "BIND_HOST=0.0.0.0" not in DOCKERFILE
    assert "setcap cap_net_bind_service=+ep /usr/sbin/nginx" in DOCKERFILE
    assert 'pip install --no-cache-dir ".[gpu]"' in DOCKERFILE
    assert "punkt_tab" in DOCKERFILE and "MODELS_DIR=/data/models" in DOCKERFILE


def test_base_image_matches_the_torch_cuda_build():
    import tomllib

    gpu = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    assert "torch==2.8.0" in gpu  # PyPI's torch 2.8.0 is the CUDA 12.8 build
    assert instructions("FROM")[0].startswith("nvidia/cuda:12.8")


def test_healthcheck_fails_when_nothing_listens():
    env = {**os.environ, "TTS_PORT": str(free_port()), "WHISPERX_PORT": str(free_port())}
    out = subprocess.run(
        [sys.executable, "-m", "gpu_audio", "healthcheck", "--timeout", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "not ready" in out.stdout


def test_the_user_step_holds_for_the_default_and_the_prebaked_models_dir(tmp_path):
    """The step that makes the app user and its folders, run in a scratch root for
    MODELS_DIR=/data/models and for the README's pre-bake /opt/models: every folder it
    hands to the app user must exist by then."""
    (step,) = [run for run in instructions("RUN") if "useradd" in run]
    for models in ("/data/models", "/opt/models"):
        root = tmp_path / models.strip("/").replace("/", "-")
        (root / "app").mkdir(parents=True)  # WORKDIR
        command = re.sub(r"useradd [^&]*&& ", "", step).replace("chown -R app", "ls -d")
        command = re.sub(r"(?<![\w$])/(data|app|opt)\b", lambda m: f"{root}/{m.group(1)}", command)
        done = subprocess.run(
            ["bash", "-euc", command],
            env={**os.environ, "MODELS_DIR": f"{root}{models}"},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, (models, command, done.stderr)
        assert (root / models.strip("/")).is_dir() and (root / "data").is_dir()
