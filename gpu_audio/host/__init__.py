"""GPU host lifecycle: start it before a batch, stop it when idle.

from gpu_audio.host import ensure_gpu_ready, stop_gpu, gpu_status
ensure_gpu_ready()          # reads server_config.json; returns when both servers are ready
"""

from .ec2 import AwsError, Busy, HostError, HostTimeout, InstanceInfo, InstanceState, NotReady
from .lifecycle import ensure_gpu_ready, gpu_status, stop_gpu

__all__ = [
    "ensure_gpu_ready",
    "stop_gpu",
    "gpu_status",
    "HostError",
    "AwsError",
    "HostTimeout",
    "NotReady",
    "Busy",
    "InstanceInfo",
    "InstanceState",
]
