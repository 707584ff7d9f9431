# One image, both servers: supervisord runs the TTS and WhisperX gunicorns.
#
#   docker build -t gpu-audio:0.1.0-qwen3tts1.7b-whisperlv3 .
#   docker run --gpus all -p 443:443 -v gpu-audio-models:/data -v /etc/gpu-audio:/tls:ro \
#              -e TTS_API_KEY=... -e TLS_CA_CERT=/tls/ca.crt -e TLS_CA_KEY=/tls/ca.key \
#              gpu-audio:0.1.0-qwen3tts1.7b-whisperlv3
#
# The front door (nginx, TLS) is the only public listener: https://HOST/tts and
# https://HOST/whisperx; the servers and the proxy listen on loopback only.
#
# Models live on the /data volume by default (fetched once on the first start);
# --build-arg BAKE_MODELS=1 puts them in the image instead (bigger image, no
# download at start). See the README's "Deploying" section.

# torch 2.8.0 from PyPI (the gpu extra) is built for CUDA 12.8 and brings its own
# CUDA/cuDNN wheels; the cuDNN runtime base also serves CTranslate2 (faster-whisper).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common ca-certificates \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev \
        libsndfile1 ffmpeg nginx libcap2-bin \
 && setcap cap_net_bind_service=+ep /usr/sbin/nginx \
 && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
RUN python3.11 -m venv $VIRTUAL_ENV && pip install --no-cache-dir --upgrade pip

WORKDIR /app
# Dependencies first (a layer that survives code changes), then the code.
COPY pyproject.toml README.md ./
COPY gpu_audio ./gpu_audio
COPY tts ./tts
COPY whisperx_server ./whisperx_server
COPY proxy ./proxy
RUN pip install --no-cache-dir ".[gpu]"
COPY gunicorn.conf.py supervisord.conf ./
# The GPU check (README, "GPU check"): docker run --gpus all IMAGE python scripts/gpu_check.py --quick
COPY scripts ./scripts

# whisperx.align needs NLTK's punkt_tab; it must never be downloaded at request time.
ENV NLTK_DATA=/opt/nltk_data
RUN python -m nltk.downloader -d $NLTK_DATA punkt_tab

ARG MODELS_DIR=/data/models
ENV MODELS_DIR=$MODELS_DIR \
    HF_HOME=$MODELS_DIR/huggingface \
    TORCH_HOME=$MODELS_DIR/torch \
    BIND_HOST=127.0.0.1 \
    TTS_PORT=5000 \
    WHISPERX_PORT=5001 \
    TTS_ENGINE=qwen \
    WHISPERX_ENGINE=whisperx \
    ACTIVITY_DIR=/tmp/gpu-audio \
    AUTOSTOP=1 \
    FRONT=1 \
    FRONT_HOST=0.0.0.0 \
    FRONT_PORT=443

RUN useradd --create-home --uid 1000 app && mkdir -p /data $MODELS_DIR && chown -R app /data $MODELS_DIR /app

# Pre-bake: --build-arg BAKE_MODELS=1 --build-arg MODELS_DIR=/opt/models
ARG BAKE_MODELS=0
RUN if [ "$BAKE_MODELS" = "1" ]; then mkdir -p $MODELS_DIR && gpu-audio download-models \
    && chown -R app $MODELS_DIR; fi

USER app
VOLUME ["/data"]
# Only the front door: nginx binds 443 as the app user (setcap above).
EXPOSE 443

# Model loading takes minutes on a cold start: do not count failures before then.
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
    CMD ["gpu-audio", "healthcheck"]

# Fetch what is missing (a no-op when the volume has it), then supervisord
# becomes the container's main process, with supervisord.conf plus one program per
# service of the table (gpu-audio supervise renders them; --print shows the result).
CMD ["sh", "-c", "gpu-audio download-models && exec gpu-audio supervise"]
