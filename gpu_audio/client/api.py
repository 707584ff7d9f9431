"""Python client for both servers: decoded results, server-sized batches, retries.

from gpu_audio.client import Client
client = Client.from_config()                 # server_config.json + environment
audios = client.generate_batch(["Hello.", "Second line."])   # [(float32 array, 24000), ...]
words = client.align(audios[0], "Hello.").words
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

from gpu_audio import readiness, services, tls
from gpu_audio.audio import b64_wav, decode_wav, to_mono
from gpu_audio.client_config import load_client_config

log = logging.getLogger(__name__)

RETRY_STATUSES = {502, 503, 504}


class ClientError(Exception):
    """A request that did not succeed; ``str()`` is one sentence for a person."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    score: float
    estimated: bool = False


@dataclass
class Alignment:
    words: list[Word] = field(default_factory=list)
    duration: float | None = None
    error: str | None = None


@dataclass
class Transcription:
    text: str = ""
    segments: list[dict] = field(default_factory=list)
    language: str | None = None
    duration: float | None = None
    error: str | None = None


def wav_base64(audio) -> str:
    """A path, WAV/FLAC/... bytes, or an (array, rate) pair → base64 of an audio file
    (an array is encoded as the servers encode theirs: gpu_audio.audio)."""
    if isinstance(audio, (str, Path)):
        return base64.b64encode(Path(audio).read_bytes()).decode("ascii")
    if isinstance(audio, (bytes, bytearray)):
        return base64.b64encode(bytes(audio)).decode("ascii")
    samples, rate = audio  # (frames,) or soundfile's (frames, channels): the servers hear mono
    return b64_wav(to_mono(np.asarray(samples, dtype=np.float32)), int(rate))


def _words(raw) -> list[Word]:
    return [
        Word(
            w["word"],
            float(w["start"]),
            float(w["end"]),
            float(w.get("score", 0.0)),
            bool(w.get("estimated", False)),
        )
        for w in raw
    ]


class Client:
    """Both servers. Timeouts are (connect, read) seconds; batches get the long read
    timeout the existing clients use (30 minutes). ``urls``: more servers of the
    services table, by name (``health()`` covers them). ``ca_cert``: the deployment's
    CA (PEM text or a file, server_config.json's ``ca_cert``) that HTTPS servers are
    verified with; None: the default trust store. Verification is never off."""

    def __init__(
        self,
        server_url: str,
        whisper_url: str,
        api_key: str | None = None,
        *,
        batch_size: int = 16,
        retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        connect_timeout: float = 10.0,
        read_timeout: float = 1800.0,
        session=None,
        sleep=time.sleep,
        urls: dict[str, str] | None = None,
        ca_cert: str | None = None,
    ):
        given = {services.TTS.name: server_url, services.WHISPERX.name: whisper_url, **(urls or {})}
        self.urls = {name: url.rstrip("/") for name, url in given.items()}
        self.batch_size = max(1, batch_size)
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.timeout = (connect_timeout, read_timeout)
        self.session = session or requests.Session()
        self.ca_cert = ca_cert
        try:
            self.verify = tls.verify_with(ca_cert)
        except tls.TlsError as exc:
            raise ClientError(str(exc)) from None
        if ca_cert or session is None:  # a session passed in keeps its own unless ca_cert is given
            self.session.verify = self.verify
        # Named on each call only for ca_cert: requests lets REQUESTS_CA_BUNDLE override a
        # session's verify, and the deployment's CA must win over a machine-wide bundle.
        self._call_verify = self.verify if ca_cert else None
        if api_key:
            self.session.headers["X-API-Key"] = api_key
        self.sleep = sleep

    @classmethod
    def from_config(cls, path=None, env=None, **options) -> Client:
        config = load_client_config(path, env, accept_whisper_url=True)
        urls = {
            s.name: getattr(config, s.url_field)
            for s in services.SERVICES
            if getattr(config, s.url_field, None)
        }
        options.setdefault("ca_cert", config.ca_cert)
        return cls(config.server_url, config.whisper_url, config.api_key, urls=urls, **options)

    # -- plumbing ----------------------------------------------------------------------
    def _request(self, server: str, method: str, path: str, body=None, timeout=None) -> dict:
        """One call with retries: 502/503/504 (honouring Retry-After) and connection
        failures are retried with backoff; other 4xx/5xx are not."""
        url = self.urls[server] + path
        delay = self.backoff
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                r = self.session.request(
                    method, url, json=body, timeout=timeout or self.timeout, verify=self._call_verify
                )
            except requests.exceptions.SSLError as exc:  # retrying cannot make a certificate trusted
                refused = tls.untrusted(exc)
                if refused is None:
                    raise ClientError(
                        f"TLS with the {server} server at {self.urls[server]} failed: {exc}"
                    ) from None
                raise ClientError(tls.untrusted_text(self.urls[server], refused, self.ca_cert)) from None
            except (requests.ConnectionError, requests.ConnectTimeout) as exc:
                if last:
                    raise ClientError(
                        f"cannot reach the {server} server at {self.urls[server]} "
                        f"({type(exc).__name__}); is it running (gpu-audio start-gpu)?"
                    ) from None
                log.info("%s unreachable, retrying in %.0f s", server, delay)
            except requests.ReadTimeout:
                raise ClientError(
                    f"the {server} server did not answer {path} within {(timeout or self.timeout)[1]:.0f} s"
                ) from None
            except requests.exceptions.InvalidHeader:  # its message would quote the header: the key
                raise ClientError(
                    "a request header is not valid: check api_key in server_config.json "
                    "(or TTS_API_KEY) for spaces or line breaks"
                ) from None
            except requests.RequestException as exc:  # a bad URL, a connection cut mid-answer
                raise ClientError(f"cannot call the {server} server at {url}: {exc}") from None
            else:
                if r.status_code < 400:
                    try:
                        return r.json()
                    except ValueError:
                        raise ClientError(
                            f"{url} answered {r.status_code} with something that is not JSON: "
                            f"is {server} in server_config.json the gpu-audio server?"
                        ) from None
                message = _error_text(r)
                if r.status_code not in RETRY_STATUSES or last:
                    raise ClientError(f"{server} {path} answered {r.status_code}: {message}", r.status_code)
                retry_after = r.headers.get("Retry-After")
                if retry_after and retry_after.isdigit():
                    delay = float(retry_after)
                log.info("%s %s: %s (%d); retrying in %.0f s", server, path, message, r.status_code, delay)
            self.sleep(min(delay, self.max_backoff))
            delay = min(delay * 2, self.max_backoff)
        raise AssertionError("unreachable")

    # -- routes --------------------------------------------------------------------------
    def health(self) -> dict:
        """Every server's /health (one that cannot be reached says so)."""
        return {
            server: readiness.health(url, timeout=(5, 10), session=self.session, verify=self.verify)
            for server, url in self.urls.items()
        }

    def generate_batch(
        self,
        texts: list[str],
        instruct: str | None = None,
        instructs=None,
        batch: bool = True,
        language: str | None = None,
        speaker: str | None = None,
        progress=None,
    ) -> list[tuple[np.ndarray, int]]:
        """Speech for every text, in order; sent in requests of ``batch_size`` texts."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            body = {"texts": chunk, "batch": batch}
            if instruct:
                body["instruct"] = instruct
            if instructs is not None:
                body["instructs"] = list(instructs[start : start + self.batch_size])
            if language:
                body["language"] = language
            if speaker:
                body["speaker"] = speaker
            answer = self._request("tts", "POST", "/generate_batch", body)
            out += [decode_wav(b64) for b64 in answer["audios"]]
            if progress:
                progress(len(out), len(texts))
        return out

    def generate(self, text: str, instruct: str | None = None) -> tuple[np.ndarray, int]:
        body = {"text": text, **({"instruct": instruct} if instruct else {})}
        return decode_wav(self._request("tts", "POST", "/generate", body)["audio"])

    def transcribe_batch(self, audios, language: str = "en") -> list[Transcription]:
        out = []
        for start in range(0, len(audios), self.batch_size):
            chunk = [wav_base64(a) for a in audios[start : start + self.batch_size]]
            answer = self._request(
                "whisperx", "POST", "/transcribe_batch", {"audios": chunk, "language": language}
            )
            out += [
                Transcription(
                    t.get("text", ""),
                    t.get("segments", []),
                    t.get("language"),
                    t.get("duration_seconds"),
                    t.get("error"),
                )
                for t in answer["transcriptions"]
            ]
        return out

    def transcribe(self, audio, language: str = "en") -> Transcription:
        t = self._request(
            "whisperx", "POST", "/transcribe", {"audio": wav_base64(audio), "language": language}
        )
        return Transcription(t["text"], t.get("segments", []), t.get("language"), t.get("duration_seconds"))

    def align_batch(self, items, language: str = "en") -> list[Alignment]:
        """``items``: (audio, text) pairs. A failed item is an Alignment with ``error``."""
        out = []
        for start in range(0, len(items), self.batch_size):
            chunk = [{"audio": wav_base64(a), "text": t} for a, t in items[start : start + self.batch_size]]
            answer = self._request("whisperx", "POST", "/align_batch", {"items": chunk, "language": language})
            out += [
                Alignment(_words(a.get("words", [])), a.get("duration_seconds"), a.get("error"))
                for a in answer["alignments"]
            ]
        return out

    def align(self, audio, text: str, language: str = "en") -> Alignment:
        a = self._request(
            "whisperx", "POST", "/align", {"audio": wav_base64(audio), "text": text, "language": language}
        )
        return Alignment(_words(a["words"]), a.get("duration_seconds"))


def _error_text(response) -> str:
    try:
        return str(response.json().get("error") or response.reason)
    except ValueError:
        return response.reason or "no detail"
