# syntax=docker/dockerfile:1

# One image for every feedbackloop process. The command picks the process:
#   python -m services.<ingest|query|profiles|learner|trainer|metrics|webhooks>.main
#   feedbackloop migrate | feedbackloop create-topics
# The default command runs ingest.

ARG PYTHON_VERSION=3.11
ARG NODE_VERSION=20
ARG DEBIAN_RELEASE=bookworm

# The browser assets: the feedback widget's bundles (served by ingest at /widget/v1/) and the
# review console's script and stylesheet (served by query at /console/static/), built from
# source with the locked npm tooling. Only the built files reach the runtime stage.
FROM node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim AS assets

ENV NPM_CONFIG_AUDIT=false \
    NPM_CONFIG_FUND=false \
    NPM_CONFIG_UPDATE_NOTIFIER=false

WORKDIR /src/libs
# The locks first, their own layer: reused while only the sources change.
COPY libs/widget/package.json libs/widget/package-lock.json ./widget/
COPY libs/console/package.json libs/console/package-lock.json ./console/
RUN cd widget && npm ci --loglevel=error \
    && cd ../console && npm ci --loglevel=error

COPY libs/widget/build.mjs libs/widget/tsconfig.json ./widget/
COPY libs/widget/src ./widget/src
COPY libs/console/build.mjs libs/console/tsconfig.json ./console/
COPY libs/console/src ./console/src
RUN cd widget && npm run --silent build \
    && cd ../console && npm run --silent build

FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Compilers for any locked dependency that has no wheel for the target platform. They stay in
# this stage: the runtime stage copies only the finished virtual environment, so Debian's
# current patch release is fine here and is not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

# Same path in both stages, so the scripts' shebangs stay valid after the copy.
RUN python -m venv /opt/feedbackloop
ENV PATH=/opt/feedbackloop/bin:$PATH

WORKDIR /src

# Dependencies come from the lock alone and form their own layer, reused while only code changes.
COPY requirements.lock ./
RUN pip install -r requirements.lock

# The project itself, without resolving anything: the lock is the whole dependency set, and
# `pip check` fails the build if the lock does not satisfy pyproject.toml.
COPY pyproject.toml ./
COPY libs ./libs
COPY services ./services
RUN pip install --no-deps . \
    && pip check


FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS runtime

ENV PATH=/opt/feedbackloop/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FEEDBACKLOOP_ENVIRONMENT=production \
    FEEDBACKLOOP_HOST=0.0.0.0

RUN groupadd --system --gid 10001 feedbackloop \
    && useradd --system --uid 10001 --gid feedbackloop --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin feedbackloop

COPY --from=build /opt/feedbackloop /opt/feedbackloop
COPY deploy/docker/healthcheck.py /opt/feedbackloop/healthcheck.py
COPY --from=assets /src/libs/widget/dist /opt/feedbackloop/assets/widget
COPY --from=assets /src/libs/console/dist /opt/feedbackloop/assets/console
ENV FEEDBACKLOOP_WIDGET_DIR=/opt/feedbackloop/assets/widget \
    FEEDBACKLOOP_CONSOLE_DIR=/opt/feedbackloop/assets/console

# The service user owns nothing in the image, so the root filesystem can be mounted read-only
# (bytecode was compiled at install time).
WORKDIR /app
USER 10001:10001

EXPOSE 8000 8001 8002 8003 8004 8005 8006

# Liveness only (/healthz). Readiness (/readyz) depends on the broker and the database, and is
# for orchestrators that route traffic, not for restarting a process that is itself fine.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/opt/feedbackloop/healthcheck.py"]

CMD ["python", "-m", "services.ingest.main"]
