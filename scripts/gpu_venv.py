"""Create (or reuse) the virtualenv of the gpu-libs test tier and print its path.

The GPU stack is ~8 GB, so the venv lives outside the checkout, in a cache
directory keyed by a hash of the requirements: repeated runs reuse it, a change
of requirements (or a fresh machine) builds a new one.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NEED_FREE_GB = 12


def requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return project["dependencies"] + extras["gpu"] + extras["test"]


def main():
    reqs = requirements()
    key = hashlib.sha256(("\n".join(reqs) + sys.version).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("GPU_AUDIO_CACHE", Path.home() / ".cache" / "gpu-audio"))
    venv = cache / f"gpu-venv-{key}"
    if (venv / ".complete").exists():
        print(venv)
        return 0
    cache.mkdir(parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(cache).free / 2**30
    if free_gb < NEED_FREE_GB:
        print(f"gpu tier: only {free_gb:.1f} GB free in {cache}; it needs ~{NEED_FREE_GB} GB "
              "(set GPU_AUDIO_CACHE to a larger disk)", file=sys.stderr)
        return 2
    shutil.rmtree(venv, ignore_errors=True)
    print(f"gpu tier: building {venv} (~8 GB, a few minutes, once)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
           "--disable-pip-version-check"]
    subprocess.run(pip + ["--upgrade", "pip"], check=True, stdout=sys.stderr)
    subprocess.run(pip + reqs, check=True, stdout=sys.stderr)
    (venv / ".complete").write_text("\n".join(reqs) + "\n")
    print(venv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
