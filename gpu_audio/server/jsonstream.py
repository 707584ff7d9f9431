"""A JSON answer with one big list of strings (base64 audio), sent piece by piece.

``jsonify`` would build one string the size of the whole answer (77 MB for 40
long lines) in a single call that holds the GIL for a few hundred ms, so
``/health`` would stall while it runs. Here each list item is its own piece:
the body is never joined and the GIL is released between pieces.
"""

from __future__ import annotations

import json

from flask import Response
from flask.json.provider import DefaultJSONProvider


class OrderedJSON(DefaultJSONProvider):
    """Flask's JSON with the keys in the order an answer builds them (Flask sorts them);
    set it with ``app.json = OrderedJSON(app)``."""

    sort_keys = False


def json_with_list(key: str, items: list[str], fields: dict) -> Response:
    """``{key: [items...], **fields}`` as a streamed response with a Content-Length."""
    head = ('{"' + key + '": [').encode()
    tail = ("], " + json.dumps(fields)[1:]).encode() if fields else b"]}"
    pieces = [head]
    for i, item in enumerate(items):
        pieces.append((("," if i else "") + json.dumps(item)).encode())
    pieces.append(tail)
    length = sum(len(p) for p in pieces)
    return Response(
        iter(pieces),
        content_type="application/json",
        headers={"Content-Length": str(length)},
        direct_passthrough=True,
    )
