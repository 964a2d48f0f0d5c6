"""nginx configurations for the static model upstreams and for the nginx split and mirror anchors.

Both run unprivileged-style from a private prefix directory: pid, logs and temp paths live there, so a run
needs no system paths and leaves nothing behind.
"""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

from procs import HOST

# What the static "model servers" answer; the candidate differs only in its version.
MODEL_RESPONSE = (
    '{{"score":0.73,"decision":true,"model_version":"{version}","prediction_id":"abc",'
    '"served_at":"2026-01-01T00:00:00Z"}}'
)


def model_response(version: str) -> str:
    return MODEL_RESPONSE.format(version=version)


def _main_context(prefix: Path) -> str:
    # Run as root (CI containers), the master would hand workers to an implicit "nobody:nobody", and
    # Debian has no group "nobody": name the worker user and its real group instead.
    user = ""
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        user = f"user {nobody.pw_name} {grp.getgrgid(nobody.pw_gid).gr_name};\n"
    return (
        f"{user}"
        "worker_processes 1;\n"
        f"pid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log warn;\n"
        "events { worker_connections 4096; }\n"
    )


def _http_common(prefix: Path) -> str:
    return (
        "access_log off;\n"
        f"client_body_temp_path {prefix}/client_body;\n"
        f"proxy_temp_path {prefix}/proxy;\n"
        f"fastcgi_temp_path {prefix}/fastcgi;\n"
        f"uwsgi_temp_path {prefix}/uwsgi;\n"
        f"scgi_temp_path {prefix}/scgi;\n"
        # Keep request bodies in memory: a body spilled to a temp file would measure the disk.
        "client_body_buffer_size 64k;\n"
        # nginx closes a keep-alive connection every 1000 requests by default; raising it keeps reconnects
        # (wrk's and the proxies' pools alike) out of every row.
        "keepalive_requests 100000;\n"
        "keepalive_timeout 75s;\n"
    )


def upstream_conf(prefix: Path, baseline_port: int, candidate_port: int) -> str:
    """Two fixed-answer servers; `return` discards the POST body itself, so keep-alive stays intact."""
    servers = ""
    for port, version in ((baseline_port, "v1"), (candidate_port, "v2")):
        body = model_response(version)
        servers += (
            f"  server {{\n    listen {HOST}:{port} backlog=4096;\n"
            "    location / {\n      default_type application/json;\n"
            f"      return 200 '{body}';\n    }}\n  }}\n"
        )
    return _main_context(prefix) + "http {\n" + _http_common(prefix) + servers + "}\n"


def split_conf(prefix: Path, listen_port: int, baseline_port: int, candidate_port: int, weight: int) -> str:
    """nginx as the proxy: split_clients on $request_id (random per request), keep-alive upstreams."""
    return (
        _main_context(prefix)
        + "http {\n"
        + _http_common(prefix)
        + f"  split_clients $request_id $model_pool {{\n    {weight}% candidate;\n    * baseline;\n  }}\n"
        + f"  upstream baseline {{\n    server {HOST}:{baseline_port};\n    keepalive 128;\n  }}\n"
        + f"  upstream candidate {{\n    server {HOST}:{candidate_port};\n    keepalive 128;\n  }}\n"
        + f"  server {{\n    listen {HOST}:{listen_port} backlog=4096;\n"
        + "    location / {\n"
        + "      proxy_pass http://$model_pool;\n"
        # HTTP/1.1 with an empty Connection header is what lets nginx reuse upstream connections.
        + "      proxy_http_version 1.1;\n"
        + '      proxy_set_header Connection "";\n'
        + "    }\n  }\n"
        + "}\n"
    )


def mirror_conf(
    prefix: Path, listen_port: int, baseline_port: int, mirror_port: int, mirror_read_timeout_s: float
) -> str:
    """nginx as the shadowing proxy: every request to the baseline, and a copy of every request (body
    included) to the mirror target through the `mirror` module, keep-alive upstreams on both sides.

    nginx answers the client without waiting for the mirror, but does not read that connection's next
    request until the mirror subrequest has finished: a slow shadow throttles the client connections.
    `proxy_read_timeout` bounds that wait (nginx's default is 60 s)."""
    return (
        _main_context(prefix)
        + "http {\n"
        + _http_common(prefix)
        + f"  upstream baseline {{\n    server {HOST}:{baseline_port};\n    keepalive 128;\n  }}\n"
        + f"  upstream shadow {{\n    server {HOST}:{mirror_port};\n    keepalive 128;\n  }}\n"
        + f"  server {{\n    listen {HOST}:{listen_port} backlog=4096;\n"
        + "    location / {\n"
        + "      mirror /mirror;\n"
        + "      mirror_request_body on;\n"
        + "      proxy_pass http://baseline;\n"
        + "      proxy_http_version 1.1;\n"
        + '      proxy_set_header Connection "";\n'
        + "    }\n"
        + "    location = /mirror {\n"
        + "      internal;\n"
        # The subrequest's own URI is /mirror: send the client's original target instead.
        + "      proxy_pass http://shadow$request_uri;\n"
        + "      proxy_http_version 1.1;\n"
        + '      proxy_set_header Connection "";\n'
        + f"      proxy_read_timeout {mirror_read_timeout_s:g}s;\n"
        + "    }\n  }\n"
        + "}\n"
    )


def nginx_cmd(prefix: Path) -> list[str]:
    # -e: the error log before the config is read, or nginx first tries /var/log/nginx/error.log.
    return [
        "nginx",
        "-p",
        f"{prefix}/",
        "-c",
        f"{prefix}/nginx.conf",
        "-e",
        f"{prefix}/error.log",
        "-g",
        "daemon off;",
    ]


def write_prefix(prefix: Path, conf: str) -> None:
    """A private prefix dir the (possibly unprivileged) workers can traverse."""
    prefix.mkdir(parents=True, exist_ok=True)
    prefix.chmod(0o711)  # traverse-only is all a worker running as "nobody" needs
    (prefix / "nginx.conf").write_text(conf)
