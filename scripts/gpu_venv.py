"""Create (or reuse) the virtualenv of the gpu-libs test tier and print its path.

The GPU stack is ~8 GB, so the venv lives outside the checkout, in a cache
directory keyed by a hash of the gpu requirements: repeated runs reuse it, a
change of the gpu extra (or a fresh machine) builds a new one. The light
default and test requirements are synced into it on every run (seconds), so
changing them never costs a rebuild.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NEED_FREE_GB = 12
STALE_AFTER_S = 24 * 3600


def requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return extras["gpu"], project["dependencies"] + extras["test"]


def pip(venv, *args):
    command = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        *args,
    ]
    subprocess.run(command, check=True, stdout=sys.stderr)


def remove_stale(cache: Path, keep: Path):
    """Old venvs of earlier gpu requirements: 8 GB each, unused for a day."""
    for old in cache.glob("gpu-venv-*"):
        marker = old / ".complete"
        if old != keep and (not marker.exists() or time.time() - marker.stat().st_mtime > STALE_AFTER_S):
            print(f"gpu tier: removing stale {old}", file=sys.stderr)
            shutil.rmtree(old, ignore_errors=True)


def main():
    gpu, light = requirements()
    key = hashlib.sha256(("\n".join(gpu) + sys.version).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("GPU_AUDIO_CACHE", Path.home() / ".cache" / "gpu-audio"))
    venv = cache / f"gpu-venv-{key}"
    marker = venv / ".complete"
    cache.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        free_gb = shutil.disk_usage(cache).free / 2**30
        if free_gb < NEED_FREE_GB:
            print(
                f"gpu tier: only {free_gb:.1f} GB free in {cache}; it needs ~{NEED_FREE_GB} GB "
                "(set GPU_AUDIO_CACHE to a larger disk)",
                file=sys.stderr,
            )
            return 2
        shutil.rmtree(venv, ignore_errors=True)
        print(f"gpu tier: building {venv} (~8 GB, a few minutes, once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip(venv, "--upgrade", "pip")
        pip(venv, *gpu, *light)
        marker.write_text("\n".join(gpu) + "\n")
    else:
        pip(venv, *light)  # a no-op when nothing changed
        marker.touch()
    remove_stale(cache, venv)
    print(venv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
