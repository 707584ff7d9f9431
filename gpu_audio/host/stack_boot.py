"""The host's boot script (host_boot.sh, package data) with its config lines filled in:
literal values for a host the tests run, or the stack's values through ``Fn::Sub`` for
the instances' user data.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from importlib import resources
from typing import Any

from .stack_common import STACK_NAME, ref, sub, volume_name
from .supervise import STOPWAITSECS

BOOT_SCRIPT = "host_boot.sh"
CONFIG_MARK = "# @CONFIG@\n"
USER_DATA_LIMIT = 16 * 1024  # EC2's limit on user data, before base64
# docker stop waits longer than supervisord's stopwaitsecs: the servers drain first.
STOP_TIMEOUT_S = STOPWAITSECS + 60


def boot_script_text() -> str:
    """host_boot.sh as shipped (package data)."""
    return resources.files(__package__).joinpath(BOOT_SCRIPT).read_text(encoding="utf-8")


def _split_script() -> tuple[str, str]:
    head, mark, tail = boot_script_text().partition(CONFIG_MARK)
    if not mark:
        raise RuntimeError(f"{BOOT_SCRIPT} has no {CONFIG_MARK.strip()} line")
    return head, tail


BOOT_KEYS = (
    "REGION",
    "STACK",
    "HOST_INDEX",
    "PARAMETER_PREFIX",
    "IMAGE_URI",
    "VOLUME_ID",
    "IDLE_MINUTES",
    "STOP_TIMEOUT",
    "FRONT_NAMES",
)


def render_boot_script(values: Mapping[str, str]) -> str:
    """The boot script with literal values (what a host runs; the tests run it)."""
    head, tail = _split_script()
    config = "".join(f"{key}={shlex.quote(str(values[key]))}\n" for key in BOOT_KEYS)
    return head + config + tail


def user_data(index: int, front_names: Any) -> dict:
    """The boot script with the stack's values put in by Fn::Sub: only its config lines
    go through Fn::Sub, so the script's own ``${...}`` stay bash's. Every value is
    AWS-made or held to a pattern (Parameters), so single quotes hold it."""
    head, tail = _split_script()
    variables = {
        "REGION": ref("AWS::Region"),
        "STACK": STACK_NAME,
        "HOST_INDEX": str(index),
        "PARAMETER_PREFIX": ref("ParameterPrefix"),
        "IMAGE_URI": ref("ImageUri"),
        "VOLUME_ID": ref(volume_name(index)),
        "IDLE_MINUTES": ref("IdleMinutes"),
        "STOP_TIMEOUT": str(STOP_TIMEOUT_S),
        "FRONT_NAMES": front_names,
    }
    config = "".join(f"{key}='${{{key}}}'\n" for key in BOOT_KEYS)
    return {"Fn::Base64": {"Fn::Join": ["", [head, sub(config, variables), tail]]}}
