# Ferry's image: one image for every process kind; the command picks the kind.
#
#   docker build -t ferry .
#   docker run ferry                                        # web (gunicorn on $PORT, 8000)
#   docker run ferry ferry worker --queues default,scheduled
#   docker run ferry ferry worker --queues heavy
#   docker run ferry ferry scheduler
#   docker run ferry ferry migrate                          # one-off, before start/upgrade
#
# deploy/compose.yaml and deploy/k8s/ run exactly these commands (the Procfile's).

# --- build: a virtualenv with Ferry and its dependencies --------------------------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/ferry/venv/bin:$PATH
RUN python -m venv /opt/ferry/venv

WORKDIR /src
# Dependencies first, from pyproject.toml alone, so a code change reuses this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install -r requirements.txt

COPY runtime ./runtime
COPY gateway ./gateway
COPY functions ./functions
COPY schedules ./schedules
# Not editable: the image needs no source tree, only the installed packages.
RUN pip install --no-deps .

# --- runtime: the virtualenv, the gunicorn config, an unprivileged user ------------------------
FROM python:3.11-slim

RUN groupadd --system --gid 10001 ferry \
    && useradd --system --uid 10001 --gid ferry --home-dir /opt/ferry --no-create-home \
        --shell /usr/sbin/nologin ferry

COPY --from=build /opt/ferry/venv /opt/ferry/venv
WORKDIR /opt/ferry/app
COPY Procfile ./
COPY deploy/gunicorn.conf.py ./deploy/gunicorn.conf.py

ENV PATH=/opt/ferry/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8000 \
    FERRY_LOG_FORMAT=json

# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 8000

# The web process's liveness; no curl in the slim image, so Python asks. Other process
# kinds serve no HTTP: compose and Kubernetes turn this check off for them.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "gateway.wsgi:app"]
