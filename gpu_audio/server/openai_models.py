"""``GET /v1/models`` on every server: its own models and its peers', one list.

The front door sends ``/v1/models`` to any one server and the proxy relays it to the
first service of the table, so each server answers for the whole host: its own
models, then those of the other services of the table (gpu_audio.services), asked on
loopback at their ports with the client's own key and a short timeout. A peer that is
down, slow or refuses the key is left out. Answers are cached briefly; a peer asked
with ``PEER_HEADER`` answers its own models only (no server asks back).

Both servers' ``/v1/models`` views call ``models_response(service, own)``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping

import requests
from flask import Response, jsonify, request

from gpu_audio import services
from gpu_audio.services import Service

log = logging.getLogger(__name__)

OWNED_BY = "gpu-audio"
PEER_HEADER = "X-GPU-Audio-Peer"  # "own models only": set when a server asks a peer
PEER_TIMEOUT_S = 1.0
CACHE_S = 30.0  # a peer's list, once had
MISS_CACHE_S = 5.0  # a peer that did not answer is not asked again before this
_FORWARDED = ("Authorization", "X-API-Key")


def model_card(model_id: str, *, created: int = 0, **extra) -> dict:
    """One entry of ``data`` in OpenAI's shape (extra fields, e.g. ``root`` for an alias)."""
    return {"id": model_id, "object": "model", "created": created, "owned_by": OWNED_BY, **extra}


class _PeerCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, list[dict]]] = {}

    def get(self, url: str) -> list[dict] | None:
        with self._lock:
            entry = self._entries.get(url)
        return entry[1] if entry and entry[0] > time.monotonic() else None

    def put(self, url: str, cards: list[dict], ttl: float) -> None:
        with self._lock:
            self._entries[url] = (time.monotonic() + ttl, cards)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


CACHE = _PeerCache()


def _ask(url: str, headers: dict[str, str]) -> list[dict]:
    cached = CACHE.get(url)
    if cached is not None:
        return cached
    cards: list[dict] = []
    try:
        answer = requests.get(url, headers={**headers, PEER_HEADER: "1"}, timeout=PEER_TIMEOUT_S)
        data = answer.json().get("data") if answer.status_code == 200 else None
        if isinstance(data, list):
            cards = [card for card in data if isinstance(card, dict) and isinstance(card.get("id"), str)]
    except (requests.RequestException, ValueError, AttributeError) as exc:
        log.debug("peer %s left out of /v1/models: %s", url, exc)
    CACHE.put(url, cards, CACHE_S if cards else MISS_CACHE_S)
    return cards


def peer_models(me: Service, headers: Mapping[str, str], env: Mapping[str, str] | None = None) -> list[dict]:
    """The models of every other service of the table (read now), asked on loopback."""
    env = os.environ if env is None else env
    forwarded = {name: headers[name] for name in _FORWARDED if headers.get(name)}
    cards: list[dict] = []
    for peer in services.SERVICES:
        if peer.name != me.name:
            cards += _ask(f"{peer.url(env)}/v1/models", forwarded)
    return cards


def models_response(me: Service, own: list[dict]) -> Response:
    """The view's answer: ``own`` then the peers' (unless a peer is asking), each id once."""
    cards = list(own)
    if not request.headers.get(PEER_HEADER):
        cards += peer_models(me, {name: request.headers.get(name, "") for name in _FORWARDED})
    unique: dict[str, dict] = {}
    for card in cards:
        unique.setdefault(card["id"], card)
    return jsonify({"object": "list", "data": list(unique.values())})
