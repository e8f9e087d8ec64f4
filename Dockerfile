# One image for every Ecstatic target: `ecstatic serve api`, `serve git`, `serve intake,query`,
# or `serve all` (the default command). Only the project's base dependencies: no test or infra
# extras, no compiler.
#
#   podman build -t ecstatic .                                   # from the official Debian image
#   podman build --build-arg BASE=localhost/debian-base:bookworm \
#     --secret id=pip-settings,src=pip-settings.tar -t ecstatic . # a machine without a registry
#
# Stages: python (Debian's Python and an empty venv), requirements (the dependency lists from
# pyproject.toml), deps (those installed), code (the project), venv (deps without pip and the
# build backend), then the final image from BASE again. Its two layers from the venv are split
# so that a code change rebuilds in seconds and adds a small layer, not another gigabyte (chDB
# alone is 534 MB).
#
# BASE: any Debian 12 image; tests pass one imported from debootstrap
# (infra/images/prepare-podman.sh) because no registry is reachable there.
# pip-settings (optional build secret): a tar of the host's pip settings, unpacked over / for
# the `pip install` step only, so it never lands in a layer. It may hold /etc/pip.conf,
# /etc/xdg/pip/ (constraints, indexes) and a CA bundle at
# /usr/local/share/ecstatic-build/ca-certificates.crt, for networks whose TLS goes through
# their own CA (tests/container/images.py writes it). It sits outside /etc/ssl/certs because
# the ca-certificates package regenerates that bundle without the host's CA.
ARG BASE=docker.io/library/debian:12-slim

FROM ${BASE} AS python
ARG DEBIAN_FRONTEND=noninteractive
# Every dependency ships a manylinux wheel for Debian's Python 3.11: nothing to compile.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/ecstatic
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src

FROM python AS requirements
COPY pyproject.toml /src/
# The base dependencies (no test or infra extras) and the build backend, as plain lists: the
# dependency layer below depends on their content only, so editing the extras, tool settings
# or the README does not download chDB again.
RUN python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); \
open('/requirements.txt', 'w').write('\n'.join(p['project']['dependencies']) + '\n'); \
open('/build-requirements.txt', 'w').write('\n'.join(p['build-system']['requires']) + '\n')"

FROM python AS deps
COPY --from=requirements /requirements.txt /build-requirements.txt /src/
RUN --mount=type=secret,id=pip-settings \
    set -eu; \
    ca=/usr/local/share/ecstatic-build/ca-certificates.crt; \
    if [ -f /run/secrets/pip-settings ]; then tar -C / -xf /run/secrets/pip-settings; fi; \
    if [ -f "$ca" ]; then export PIP_CERT="$ca"; fi; \
    /opt/ecstatic/bin/pip install -r /src/requirements.txt -r /src/build-requirements.txt; \
    rm -rf /etc/pip.conf /etc/xdg/pip /usr/local/share/ecstatic-build

FROM deps AS code
COPY pyproject.toml README.md /src/
COPY services /src/services
# The project itself (`pip install /src`), offline: its dependencies and build backend are
# already in the venv, and `pip check` proves they satisfy it. /delta keeps only what this
# install adds to the venv, for the final image's small layer.
RUN /opt/ecstatic/bin/pip install --no-deps --no-build-isolation /src \
 && /opt/ecstatic/bin/pip check \
 && mkdir /delta && cd /opt/ecstatic \
 && cp -a --parents bin/ecstatic lib/python3.*/site-packages/services \
      lib/python3.*/site-packages/ecstatic-*.dist-info /delta/
# One directory per piece of state, from the layout map (services/targets.py), so that an
# empty volume mounted there starts owned by the service user with mode 0700.
RUN /opt/ecstatic/bin/python -c "import os; from services.targets import STATE; \
[os.makedirs('/state/' + s.path, mode=0o700, exist_ok=True) for s in STATE.values()]"

FROM deps AS venv
# The runtime needs neither the build backend nor pip.
RUN /opt/ecstatic/bin/pip uninstall -y -q -r /src/build-requirements.txt \
 && /opt/ecstatic/bin/pip uninstall -y -q pip

FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
# The Python runtime only (no venv module, no pip, no compiler).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 ecstatic \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/ecstatic \
      --shell /usr/sbin/nologin ecstatic \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/ecstatic
COPY --from=venv /opt/ecstatic /opt/ecstatic
COPY --from=code /delta/ /opt/ecstatic/
COPY --from=code --chown=10001:10001 /state/ /var/lib/ecstatic/
ENV ECSTATIC_HOME=/var/lib/ecstatic \
    ECSTATIC_BIND_HOST=0.0.0.0 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/ecstatic/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /var/lib/ecstatic
USER 10001:10001
# Documentation only: the ports of `serve all`; each target binds its own (ECSTATIC_*_PORT).
EXPOSE 8101 8102 8103 8104 8514
ENTRYPOINT ["/opt/ecstatic/bin/ecstatic"]
CMD ["serve", "all"]
