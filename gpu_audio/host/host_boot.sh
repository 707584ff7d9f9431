#!/bin/bash
# gpu-audio host boot (the CloudFormation stack's user data; gpu_audio/host/stack.py).
#
# cloud-init runs user data once, at the first boot only; a host that stopped itself
# and was started again must come back. So this script, run by cloud-init (no
# argument), installs itself as /usr/local/sbin/gpu-audio-boot with a systemd unit
# that runs it at EVERY boot ("boot"), and stops the container with its drain time
# at shutdown ("stop"). At each boot it:
#   - takes the stack's current user data (IMDSv2) if it changed: a stack update
#     (new image, new settings) comes with a stop and start;
#   - attaches the data volume (the stack's volume for this host; after an
#     instance replacement it frees up when the old instance is gone), makes a
#     filesystem only on a blank volume, mounts it at /data (fstab, nofail);
#   - logs in to ECR and pulls the image (a new image under the same tag too);
#   - reads the API keys and the front door's CA from SSM Parameter Store into
#     files on a tmpfs (/run/gpu-audio, 0600, the image's app user): never in
#     user data, never on a command line;
#   - recreates the container: docker stop (drain time) + rm, then docker run.
# Its output goes to the journal: journalctl -u gpu-audio-boot.
#
# The stack puts its values (REGION, IMAGE_URI, ...) on the line below.
# @CONFIG@
set -euo pipefail

ROOT="${GPU_AUDIO_BOOT_ROOT:-}" # tests run the script in a scratch root
IMDS="${GPU_AUDIO_IMDS:-http://169.254.169.254}"
RETRY_DELAY="${GPU_AUDIO_RETRY_DELAY:-5}"
DEVICE_WAIT_S="${GPU_AUDIO_DEVICE_WAIT_S:-1800}"
TRIES=5
NAME=gpu-audio
UNIT_NAME=gpu-audio-boot.service
APP_UID=1000 # the image's app user (Dockerfile: useradd --uid 1000 app)
SELF="$ROOT/usr/local/sbin/gpu-audio-boot"
UNIT="$ROOT/etc/systemd/system/$UNIT_NAME"
SECRETS=/run/gpu-audio # a tmpfs: gone at shutdown, written again at each boot
DATA=/data
FSTAB="$ROOT/etc/fstab"

log() { echo "gpu-audio-boot: $*" >&2; }

# retry COMMAND...: the network calls, a few times with a growing pause.
retry() {
  local n=1
  until "$@"; do
    if ((n >= TRIES)); then
      log "gave up after $n tries: $1"
      return 1
    fi
    log "failed ($n/$TRIES), retrying: $1"
    sleep $((RETRY_DELAY * n))
    n=$((n + 1))
  done
}

imds_token() {
  curl -sSf -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 300" "$IMDS/latest/api/token"
}

# imds PATH: a value from the instance metadata service, IMDSv2 (token first).
imds() {
  local token
  token=$(retry imds_token)
  retry curl -sSf -H "X-aws-ec2-metadata-token: $token" "$IMDS/latest/$1"
}

install_unit() {
  mkdir -p "$(dirname "$SELF")" "$(dirname "$UNIT")"
  install -m 0700 "$0" "$SELF"
  cat >"$UNIT" <<EOF
[Unit]
Description=gpu-audio: mount /data, pull the image, run the container
Wants=network-online.target
After=network-online.target docker.service cloud-final.service
Requires=docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/gpu-audio-boot boot
ExecStop=/usr/local/sbin/gpu-audio-boot stop
TimeoutStartSec=0
TimeoutStopSec=$((STOP_TIMEOUT + 30))
StandardOutput=journal
StandardError=journal
SyslogIdentifier=gpu-audio-boot

[Install]
WantedBy=multi-user.target
EOF
  systemctl daemon-reload
  systemctl enable "$UNIT_NAME"
  # --no-block: it starts once cloud-init is done (After=cloud-final.service).
  systemctl start --no-block "$UNIT_NAME"
  log "installed $UNIT_NAME"
}

# The stack's current user data wins over the installed copy (a stack update).
refresh_self() {
  [[ "${GPU_AUDIO_BOOT_REFRESHED:-}" == 1 ]] && return 0
  local fresh
  fresh=$(mktemp)
  if imds user-data >"$fresh" && [[ -s "$fresh" ]] && ! cmp -s "$fresh" "$SELF"; then
    log "the stack's user data changed: running its boot script"
    install -m 0700 "$fresh" "$SELF"
    rm -f "$fresh"
    GPU_AUDIO_BOOT_REFRESHED=1 exec "$SELF" boot
  fi
  rm -f "$fresh"
}

# The data volume's device: by its EBS volume id on Nitro (NVMe names follow probe
# order, not the attachment's /dev/sdf), the attachment name on Xen.
device_path() {
  local dev
  for dev in "$ROOT/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${VOLUME_ID/-/}" "$ROOT/dev/xvdf"; do
    if [[ -e "$dev" ]]; then
      echo "$dev"
      return 0
    fi
  done
  return 1
}

# attach_volume INSTANCE: until the device shows up. Right after an instance
# replacement the old instance still holds the volume: attaching fails until the
# stack's clean-up has terminated it.
attach_volume() {
  local instance_id=$1 waited=0
  until device_path >/dev/null; do
    if ((waited >= DEVICE_WAIT_S)); then
      log "data volume $VOLUME_ID not attached after ${waited} s"
      return 1
    fi
    if ((waited % 30 == 0)); then
      aws ec2 attach-volume --region "$REGION" --volume-id "$VOLUME_ID" --instance-id "$instance_id" \
        --device /dev/sdf >/dev/null || log "cannot attach $VOLUME_ID yet (still held elsewhere?): waiting"
    fi
    sleep 5
    waited=$((waited + 5))
  done
}

mount_data() {
  local dev fs uuid
  dev=$(device_path)
  fs=$(blkid -o value -s TYPE "$dev" || true)
  if [[ -z "$fs" ]]; then
    log "formatting $dev: a blank data volume"
    mkfs.ext4 -q -L gpu-audio-data "$dev"
  fi
  uuid=$(blkid -o value -s UUID "$dev")
  mkdir -p "$ROOT$DATA"
  if ! grep -qs "^UUID=$uuid " "$FSTAB"; then
    echo "UUID=$uuid $DATA ext4 defaults,nofail 0 2" >>"$FSTAB"
  fi
  mountpoint -q "$ROOT$DATA" || mount "$ROOT$DATA"
  mkdir -p "$ROOT$DATA/models"
  chown "$APP_UID:$APP_UID" "$ROOT$DATA" "$ROOT$DATA/models"
}

ecr_login() {
  local registry="${IMAGE_URI%%/*}"
  [[ "$registry" == *.dkr.ecr.*.amazonaws.com ]] || return 0
  aws ecr get-login-password --region "$REGION" | docker login --username AWS --password-stdin "$registry"
}

# read_parameter NAME: a value under the stack's prefix, decrypted (stdout only).
read_parameter() {
  aws ssm get-parameter --region "$REGION" --with-decryption --name "$PARAMETER_PREFIX/$1" \
    --query Parameter.Value --output text
}

# The values travel through variables and printf (a builtin): never an argv.
write_secrets() {
  local keys ca_cert ca_key
  keys=$(retry read_parameter api-keys)
  ca_cert=$(retry read_parameter ca-cert)
  ca_key=$(retry read_parameter ca-key)
  umask 077
  mkdir -p "$ROOT$SECRETS"
  chmod 0700 "$ROOT$SECRETS"
  printf '%s\n' "${keys//,/$'\n'}" >"$ROOT$SECRETS/api-keys" # one key per line
  printf '%s\n' "$ca_cert" >"$ROOT$SECRETS/ca.crt"
  printf '%s\n' "$ca_key" >"$ROOT$SECRETS/ca.key"
  chmod 0600 "$ROOT$SECRETS/api-keys" "$ROOT$SECRETS/ca.crt" "$ROOT$SECRETS/ca.key"
  chown -R "$APP_UID:$APP_UID" "$ROOT$SECRETS"
}

stop_container() {
  if docker container inspect "$NAME" >/dev/null 2>&1; then
    log "stopping $NAME (up to $STOP_TIMEOUT s to drain)"
    docker stop --time "$STOP_TIMEOUT" "$NAME" >/dev/null || true
  fi
}

# A new container at every boot: the secrets just read, the image just pulled.
run_container() {
  local instance_id=$1
  if docker container inspect "$NAME" >/dev/null 2>&1; then
    log "replacing the container $NAME"
    stop_container
    docker rm "$NAME" >/dev/null
  fi
  docker run -d --name "$NAME" --restart unless-stopped --gpus all \
    --stop-timeout "$STOP_TIMEOUT" --log-driver journald \
    -p 443:443 \
    -v "$DATA:/data" -v "$SECRETS:$SECRETS:ro" \
    -e TTS_API_KEY_FILE="$SECRETS/api-keys" \
    -e TLS_CA_CERT="$SECRETS/ca.crt" -e TLS_CA_KEY="$SECRETS/ca.key" \
    -e GPU_INSTANCE_ID="$instance_id" -e AWS_REGION="$REGION" \
    -e AUTOSTOP=1 -e AUTOSTOP_HEARTBEAT=1 -e CLOUDWATCH_METRICS=1 -e IDLE_MINUTES="$IDLE_MINUTES" \
    -e FRONT_NAMES="$FRONT_NAMES" \
    "$IMAGE_URI" >/dev/null
  log "running $IMAGE_URI as $NAME"
}

boot() {
  local instance_id
  refresh_self
  instance_id=$(imds meta-data/instance-id)
  log "host $HOST_INDEX of stack $STACK ($instance_id), image $IMAGE_URI"
  attach_volume "$instance_id"
  mount_data
  retry ecr_login
  retry docker pull --quiet "$IMAGE_URI"
  write_secrets
  run_container "$instance_id"
}

case "${1:-install}" in
  install) install_unit ;;
  boot) boot ;;
  stop) stop_container ;;
  *)
    log "usage: $0 [install|boot|stop]"
    exit 2
    ;;
esac
