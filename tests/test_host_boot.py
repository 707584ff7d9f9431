"""The host's boot script (gpu_audio/host/host_boot.sh), run for real by bash in a
scratch root, with stand-ins on PATH for everything that would touch the machine or
AWS (docker, aws, curl for IMDS, blkid, mkfs.ext4, mount, systemctl, chown, sleep):
each records its argv, in order, to a log."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from gpu_audio.host import stack_boot

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

IMAGE_V1 = "123456789012.dkr.ecr.us-east-1.amazonaws.com/gpu-audio-test:v1"
IMAGE_V2 = "123456789012.dkr.ecr.us-east-1.amazonaws.com/gpu-audio-test:v2"
VOLUME = "vol-0123456789abcdef0"
INSTANCE = "i-0fedcba9876543210"
SECRETS = {
    "api-keys": "key-one-SECRET,key-two-SECRET",
    "ca-cert": "-----BEGIN CERTIFICATE-----\nCERTPEM\n-----END CERTIFICATE-----",
    "ca-key": "-----BEGIN PRIVATE KEY-----\nKEY-SECRET-PEM\n-----END PRIVATE KEY-----",
}
STUBS = ("docker", "aws", "curl", "blkid", "mkfs.ext4", "mount", "mountpoint", "systemctl", "chown", "sleep")

# One stand-in for all: it logs its name and argv (tab-separated, one call a line),
# then plays the part from the files under $STATE.
STUB = r"""#!/bin/bash
name=$(basename "$0")
# one write per call: the two sides of a pipeline run at once and share the log
line=$name; for a in "$@"; do line+=$'\t'"$a"; done
printf '%s\n' "$line" >>"$STATE/log"
args=" $* "
case "$name" in
  curl)
    case "$args" in
      *" PUT "*) echo "TOKEN-42" ;;
      *meta-data/instance-id*) [[ "$args" == *"X-aws-ec2-metadata-token: TOKEN-42"* ]] || exit 22; echo "$INSTANCE" ;;
      *user-data*) [[ -f "$STATE/user-data" ]] || exit 22; cat "$STATE/user-data" ;;
      *) exit 22 ;;
    esac ;;
  aws)
    case "$args" in
      *" get-login-password "*) echo "ECR-PASSWORD-SECRET" ;;
      *" ssm get-parameter "*)
        for ((i = 1; i <= $#; i++)); do [[ "${!i}" == --name ]] && { j=$((i + 1)); param="${!j}"; }; done
        cat "$STATE/param/$(basename "$param")" 2>/dev/null || exit 254 ;;
      *" attach-volume "*) mkdir -p "$(dirname "$DEVICE")"; touch "$DEVICE" ;;
    esac ;;
  docker)
    case "$1" in
      login) cat >"$STATE/login-stdin" ;;
      container) [[ -f "$STATE/container" ]]; exit $? ;;
      rm) rm -f "$STATE/container" ;;
      run) printf '%s' "${!#}" >"$STATE/container" ;;
    esac ;;
  blkid)
    case "$args" in
      *" TYPE "*) [[ -f "$STATE/fs" ]] || exit 2; cat "$STATE/fs" ;;
      *" UUID "*) [[ -f "$STATE/fs" ]] || exit 2; echo "0000-UUID" ;;
    esac ;;
  mkfs.ext4) echo ext4 >"$STATE/fs" ;;
  mountpoint) exit 1 ;;
esac
exit 0
"""


def values(image: str = IMAGE_V1) -> dict[str, str]:
    return {
        "REGION": "us-east-1",
        "STACK": "gpu-audio-test",
        "HOST_INDEX": "0",
        "PARAMETER_PREFIX": "/gpu-audio/test",
        "IMAGE_URI": image,
        "VOLUME_ID": VOLUME,
        "IDLE_MINUTES": "15",
        "STOP_TIMEOUT": str(stack_boot.STOP_TIMEOUT_S),
        "FRONT_NAMES": "",
    }


class Host:
    """A scratch root, the stand-ins, and the state they play from."""

    def __init__(self, tmp: Path):
        self.root = tmp / "root"
        self.state = tmp / "state"
        self.bin = tmp / "bin"
        for folder in (self.root / "etc", self.state / "param", self.bin):
            folder.mkdir(parents=True)
        stub = self.bin / "stub"
        stub.write_text(STUB)
        stub.chmod(0o755)
        for name in STUBS:
            (self.bin / name).symlink_to(stub)
        for name, value in SECRETS.items():
            (self.state / "param" / name).write_text(value + "\n")
        self.device = (
            self.root / "dev/disk/by-id" / ("nvme-Amazon_Elastic_Block_Store_" + VOLUME.replace("-", ""))
        )
        self.user_data = tmp / "user-data.sh"
        self.set_user_data(IMAGE_V1)

    def set_user_data(self, image: str) -> None:
        text = stack_boot.render_boot_script(values(image))
        self.user_data.write_text(text)
        (self.state / "user-data").write_text(text)

    def run(self, script: Path, *args: str) -> list[list[str]]:
        """Run ``script`` like its caller would; the calls it made, in order."""
        log = self.state / "log"
        log.write_text("")
        env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(self.root),
            "STATE": str(self.state),
            "DEVICE": str(self.device),
            "INSTANCE": INSTANCE,
            "GPU_AUDIO_BOOT_ROOT": str(self.root),
            "GPU_AUDIO_IMDS": "http://imds.test",
            "GPU_AUDIO_RETRY_DELAY": "0",
        }
        done = subprocess.run(
            ["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return [line.split("\t") for line in log.read_text().splitlines()]

    @property
    def installed(self) -> Path:
        return self.root / "usr/local/sbin/gpu-audio-boot"

    def boot(self) -> list[list[str]]:
        return self.run(self.installed, "boot")


def first(calls: list[list[str]], *prefix: str) -> int:
    """Index of the first call that starts with ``prefix`` (fails if none)."""
    for index, call in enumerate(calls):
        if call[: len(prefix)] == list(prefix):
            return index
    raise AssertionError(f"no call {' '.join(prefix)} in {calls}")


def called(calls: list[list[str]], *prefix: str) -> bool:
    return any(call[: len(prefix)] == list(prefix) for call in calls)


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def env_of(argv: list[str]) -> dict[str, str]:
    pairs = [argv[i + 1] for i, a in enumerate(argv) if a == "-e"]
    return dict(pair.split("=", 1) for pair in pairs)


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


def test_first_boot_installs_a_unit_that_runs_at_every_boot(host):
    calls = host.run(host.user_data)  # cloud-init runs the user data without an argument
    assert host.installed.read_text() == host.user_data.read_text()
    assert stat.S_IMODE(host.installed.stat().st_mode) == 0o700
    unit = (host.root / "etc/systemd/system/gpu-audio-boot.service").read_text()
    assert "ExecStart=/usr/local/sbin/gpu-audio-boot boot" in unit
    assert "ExecStop=/usr/local/sbin/gpu-audio-boot stop" in unit
    assert "Requires=docker.service" in unit and "WantedBy=multi-user.target" in unit
    assert f"TimeoutStopSec={stack_boot.STOP_TIMEOUT_S + 30}" in unit  # the drain fits
    assert [c for c in calls if c[0] == "systemctl"] == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "gpu-audio-boot.service"],
        ["systemctl", "start", "--no-block", "gpu-audio-boot.service"],
    ]
    assert not called(calls, "docker")  # the unit does the work


def test_fresh_host_formats_mounts_pulls_and_runs(host):
    host.run(host.user_data)
    calls = host.boot()
    # IMDSv2: the token before any metadata
    token = first(calls, "curl", "-sSf", "-X", "PUT")
    metadata = next(
        i for i, c in enumerate(calls) if c[0] == "curl" and c[-1].endswith("meta-data/instance-id")
    )
    assert token < metadata
    # the blank volume: attached, formatted once, mounted, handed to the app user
    attach = first(calls, "aws", "ec2", "attach-volume")
    assert flag(calls[attach], "--volume-id") == VOLUME and flag(calls[attach], "--instance-id") == INSTANCE
    mkfs = first(calls, "mkfs.ext4")
    assert calls[mkfs][-1] == str(host.device)
    mount = first(calls, "mount")
    assert attach < mkfs < mount
    assert calls[mount][1:] == [str(host.root / "data")]
    assert "UUID=0000-UUID /data ext4 defaults,nofail 0 2" in (host.root / "etc/fstab").read_text()
    assert called(calls, "chown", "1000:1000", str(host.root / "data"))
    # ECR: the password through stdin, then the pull, then the container
    login = first(calls, "docker", "login")
    assert calls[login][-1] == IMAGE_V1.split("/")[0] and "--password-stdin" in calls[login]
    assert (host.state / "login-stdin").read_text().strip() == "ECR-PASSWORD-SECRET"
    pull = first(calls, "docker", "pull")
    assert calls[pull][-1] == IMAGE_V1
    run = first(calls, "docker", "run")
    assert mount < login < pull < run
    assert not called(calls, "docker", "rm")  # nothing to replace
    argv = calls[run]
    assert argv[-1] == IMAGE_V1
    assert flag(argv, "--restart") == "unless-stopped"
    assert flag(argv, "--gpus") == "all"
    assert flag(argv, "-p") == "443:443"
    assert flag(argv, "--stop-timeout") == str(stack_boot.STOP_TIMEOUT_S) == "3780"
    assert flag(argv, "--name") == "gpu-audio" and "-d" in argv
    assert "/data:/data" in argv and "/run/gpu-audio:/run/gpu-audio:ro" in argv
    env = env_of(argv)
    assert env["TTS_API_KEY_FILE"] == "/run/gpu-audio/api-keys"
    assert env["TLS_CA_CERT"] == "/run/gpu-audio/ca.crt" and env["TLS_CA_KEY"] == "/run/gpu-audio/ca.key"
    assert env["GPU_INSTANCE_ID"] == INSTANCE and env["AWS_REGION"] == "us-east-1"
    assert env["AUTOSTOP"] == env["AUTOSTOP_HEARTBEAT"] == env["CLOUDWATCH_METRICS"] == "1"
    assert env["IDLE_MINUTES"] == "15"
    # the secrets: read with decryption under the prefix, written to 0600 files, never in an argv
    reads = [c for c in calls if c[:3] == ["aws", "ssm", "get-parameter"]]
    assert sorted(flag(c, "--name") for c in reads) == [
        "/gpu-audio/test/api-keys",
        "/gpu-audio/test/ca-cert",
        "/gpu-audio/test/ca-key",
    ]
    assert all("--with-decryption" in c for c in reads)
    assert max(calls.index(c) for c in reads) < run
    secrets = host.root / "run/gpu-audio"
    assert (secrets / "api-keys").read_text() == "key-one-SECRET\nkey-two-SECRET\n"
    assert (secrets / "ca.key").read_text() == SECRETS["ca-key"] + "\n"
    assert (secrets / "ca.crt").read_text() == SECRETS["ca-cert"] + "\n"
    for name in ("api-keys", "ca.crt", "ca.key"):
        assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    assert called(calls, "chown", "-R", "1000:1000", str(secrets))
    everything = "\n".join("\t".join(c) for c in calls)
    for secret in ("key-one-SECRET", "key-two-SECRET", "KEY-SECRET-PEM", "ECR-PASSWORD-SECRET"):
        assert secret not in everything


def test_reboot_keeps_the_filesystem_and_recreates_the_container(host):
    host.run(host.user_data)
    host.boot()
    calls = host.boot()  # the same host started again: volume attached, filesystem there
    assert not called(calls, "mkfs.ext4")
    assert not called(calls, "aws", "ec2", "attach-volume")
    assert (host.root / "etc/fstab").read_text().count("UUID=0000-UUID") == 1
    # the container of the last boot: stopped with its drain time, removed, run anew
    stop = first(calls, "docker", "stop")
    assert calls[stop] == ["docker", "stop", "--time", str(stack_boot.STOP_TIMEOUT_S), "gpu-audio"]
    rm = first(calls, "docker", "rm")
    run = first(calls, "docker", "run")
    assert first(calls, "docker", "pull") < stop < rm < run
    assert calls[run][-1] == IMAGE_V1


def test_a_new_image_in_the_user_data_replaces_the_old_container(host):
    host.run(host.user_data)
    host.boot()
    host.set_user_data(IMAGE_V2)  # a stack update: new user data, then a stop and start
    calls = host.boot()  # the installed (old) script runs, sees the new user data
    assert IMAGE_V2 in host.installed.read_text()
    pulls = [c[-1] for c in calls if c[:2] == ["docker", "pull"]]
    assert pulls == [IMAGE_V2]
    stop, rm, run = (
        first(calls, "docker", "stop"),
        first(calls, "docker", "rm"),
        first(calls, "docker", "run"),
    )
    assert stop < rm < run and calls[run][-1] == IMAGE_V2
    assert (host.state / "container").read_text() == IMAGE_V2


def test_stop_drains_the_container(host):
    host.run(host.user_data)
    host.boot()
    calls = host.run(host.installed, "stop")
    assert calls[-1] == ["docker", "stop", "--time", str(stack_boot.STOP_TIMEOUT_S), "gpu-audio"]
    assert not called(calls, "docker", "rm")


def test_the_network_calls_are_retried(host):
    host.run(host.user_data)
    (host.state / "param" / "ca-key").unlink()  # the parameter is missing: every try fails
    log = host.state / "log"
    env_run = subprocess.run(
        ["bash", str(host.installed), "boot"],
        env={
            "PATH": f"{host.bin}:/usr/bin:/bin",
            "STATE": str(host.state),
            "DEVICE": str(host.device),
            "INSTANCE": INSTANCE,
            "GPU_AUDIO_BOOT_ROOT": str(host.root),
            "GPU_AUDIO_IMDS": "http://imds.test",
            "GPU_AUDIO_RETRY_DELAY": "0",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert env_run.returncode != 0 and "gave up after 5 tries" in env_run.stderr
    calls = [line.split("\t") for line in log.read_text().splitlines()]
    tries = [
        c
        for c in calls
        if c[:3] == ["aws", "ssm", "get-parameter"] and flag(c, "--name") == "/gpu-audio/test/ca-key"
    ]
    assert len(tries) == 5
    assert not called(calls, "docker", "run")  # no container without its secrets


def test_the_script_fits_in_user_data_and_parses():
    text = stack_boot.render_boot_script(values())
    assert len(text.encode()) < stack_boot.USER_DATA_LIMIT
    assert text.startswith("#!/bin/bash\n")
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    assert "set -euo pipefail" in text
    # package data: the installed package carries it
    assert (Path(stack_boot.__file__).parent / stack_boot.BOOT_SCRIPT).is_file()
    assert os.access(Path(stack_boot.__file__).parent / stack_boot.BOOT_SCRIPT, os.R_OK)
