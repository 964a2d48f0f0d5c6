# rollguard: the proxy, its CLI and the sample model server, on the slim Python image.
# The base is pinned by digest so that a rebuild gets the same system libraries and Python until someone
# moves it on purpose. To move it: `docker buildx imagetools inspect python:3.11-slim` prints the current
# index digest; or build once with `--build-arg PYTHON_IMAGE=python:3.11-slim` to take the tag as it is.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# The same install CI checks: a plain (non-editable) install of the package and its data files.
COPY pyproject.toml README.md constraints.txt ./
COPY proxy ./proxy
RUN pip install -c constraints.txt . && useradd --system --uid 10001 --home /var/lib/rollguard rollguard \
    && mkdir -p /var/lib/rollguard && chown rollguard /var/lib/rollguard
COPY config ./config

USER rollguard
VOLUME ["/var/lib/rollguard"]
EXPOSE 8080 9901
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9901/healthz', timeout=2)" || exit 1
ENTRYPOINT ["rollguard"]
CMD ["serve", "--config", "/app/config/docker.yaml"]
