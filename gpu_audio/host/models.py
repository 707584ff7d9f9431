"""``gpu-audio download-models``: fetch the configured models into MODELS_DIR once.

The servers load from the same places (the TTS engine and whisperx are given
MODELS_DIR as their cache), so a model fetched here is used as it is at start.
What is already complete is skipped; a hub that cannot be reached is one clear
sentence and exit code 3, never a traceback.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

from gpu_audio.config import TTSSettings, WhisperXSettings
from gpu_audio.settings_env import ConfigError

log = logging.getLogger(__name__)

EXIT_UNREACHABLE = 3
EXIT_MISSING_STACK = 4


class Unreachable(RuntimeError):
    pass


def size_mb(path: str | Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


DOWNLOADS = ".gpu-audio-downloads.json"  # in MODELS_DIR: repo → the commit and files last asked for


def _downloads(models_dir: str) -> dict:
    try:
        return json.loads((Path(models_dir) / DOWNLOADS).read_text())
    except (OSError, ValueError):
        return {}


def _remember(models_dir: str, repo_id: str, sha: str | None, files: list[str]) -> None:
    """``sha``: the commit the hub named (its type allows None; no folder is named so)."""
    known = _downloads(models_dir)
    known[repo_id] = {"sha": sha, "files": files}
    (Path(models_dir) / DOWNLOADS).write_text(json.dumps(known, indent=1, sort_keys=True))


def _reason(exc: Exception) -> str:
    """The first line of a hub error, short: the rest is a traceback's worth of HTML."""
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _missing(folder, files) -> list[str]:
    return [f for f in files if not (Path(folder) / f).is_file()]


def fetch_snapshot(repo_id: str, models_dir: str) -> tuple[str, str]:
    """(local folder, what happened) for a hub repo, cached in ``models_dir``.

    The hub is asked for the repo's file list first, even when a copy is there: an
    interrupted download leaves a snapshot folder that huggingface_hub < 1.0 (which
    the gpu extra pins) takes for a whole one. The list is kept in MODELS_DIR, so
    without the hub a copy cut short is still told from a whole one; a copy put
    there by hand is used as it is.
    """
    from huggingface_hub import HfApi, snapshot_download

    try:
        local = snapshot_download(repo_id, cache_dir=models_dir, local_files_only=True)
    except Exception:  # LocalEntryNotFoundError, or offline mode with nothing cached
        local = None
    try:
        info = HfApi().model_info(repo_id)
    except Exception as exc:  # every hub failure ends the same way
        reason = _reason(exc)
        known = _downloads(models_dir).get(repo_id)
        if local and known and Path(local).name == known.get("sha"):
            missing = _missing(local, known.get("files") or [])
            if missing:
                raise Unreachable(
                    f"{repo_id} in {models_dir} was cut short ({len(missing)} of its files "
                    f"missing) and the hub cannot be reached ({reason}) to finish it"
                ) from None
            return local, "already present, skipped (hub not reachable: checked against its file list)"
        if local:
            return local, "already present, skipped (hub not reachable: not re-checked)"
        raise Unreachable(
            f"cannot fetch {repo_id} from the Hugging Face hub ({reason}); check the network "
            f"or HF_ENDPOINT, or pre-fill {models_dir}"
        ) from None
    files = [s.rfilename for s in info.siblings or []]
    _remember(models_dir, repo_id, info.sha, files)
    if local and Path(local).name == info.sha and not _missing(local, files):
        return local, "already complete (checked with the hub), skipped"
    try:
        path = snapshot_download(repo_id, cache_dir=models_dir)  # by branch: refs/main is written
    except Exception as exc:
        reason = _reason(exc)
        raise Unreachable(
            f"fetching {repo_id} from the Hugging Face hub failed ({reason}); "
            "run download-models again to resume"
        ) from None
    missing = _missing(path, files) if Path(path).name == info.sha else []
    if missing:
        raise Unreachable(
            f"{repo_id} is still missing {', '.join(missing[:3])} after the download; "
            "run download-models again to resume"
        )
    if local is None:
        return path, "fetched"
    if Path(local).name != Path(path).name:
        return path, f"updated to the hub's revision {Path(path).name[:8]}"
    return path, "completed (an earlier download was cut short)"


def whisper_repo(name: str) -> str:
    """faster-whisper's repo for a model size ("large-v3"), or the id/folder as given."""
    if "/" in name or os.path.isdir(name):
        return name
    if importlib.util.find_spec("faster_whisper") is None:
        raise ConfigError(
            f"WHISPERX_MODEL={name!r} is a size name; resolving it needs the gpu extra "
            "(pip install '.[gpu]'), or give a hub id such as Systran/faster-whisper-large-v3"
        )
    from faster_whisper.utils import _MODELS

    if name not in _MODELS:
        raise ConfigError(f"WHISPERX_MODEL={name!r} is not a faster-whisper size or a hub id")
    return _MODELS[name]


def plan(env, only=None) -> list[tuple[str, str, str]]:
    """(kind, what, target: repo, size or language) for every model the configured
    engines need."""
    tts, wx = TTSSettings.from_env(env), WhisperXSettings.from_env(env)
    steps: list[tuple[str, str, str]] = []
    wanted = set(only or ("tts", "whisper", "align"))
    if "tts" in wanted and tts.engine == "qwen" and not os.path.isdir(tts.model):
        steps.append(("tts", tts.model, tts.model))
    if wx.engine == "whisperx":
        if "whisper" in wanted and not os.path.isdir(wx.model):
            steps.append(("whisper", wx.model, wx.model))
        if "align" in wanted:
            languages = [
                lang.strip()
                for lang in (env.get("WHISPERX_ALIGN_LANGUAGES") or wx.language).split(",")
                if lang.strip()
            ]
            steps += [("align", f"alignment model for {lang!r}", lang) for lang in languages]
    return steps


def fetch_align_model(language: str, models_dir: str, env) -> bool:
    """whisperx's own loader fetches into MODELS_DIR what the server will load from there."""
    if importlib.util.find_spec("whisperx") is None:
        raise ConfigError(
            "alignment models are fetched with whisperx: install the gpu extra "
            "(pip install '.[gpu]') or set WHISPERX_ENGINE=pocketsphinx"
        )
    import whisperx

    try:
        whisperx.load_align_model(
            language, "cpu", model_name=env.get("WHISPERX_ALIGN_MODEL") or None, model_dir=models_dir
        )
    except (OSError, ValueError) as exc:
        raise Unreachable(
            f"cannot fetch the alignment model for {language!r} ({exc}); check the "
            f"network, or pre-fill {models_dir}"
        ) from None
    return True
