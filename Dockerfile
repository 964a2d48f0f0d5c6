# rollguard: the proxy, its CLI and the sample model server, on the slim Python image.
FROM python:3.11-slim

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
