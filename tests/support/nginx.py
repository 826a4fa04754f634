"""A real Debian nginx in front of twostep (forward authentication), and a small upstream it protects."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support.server import free_port

NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")


def find_nginx() -> str | None:
    for candidate in NGINX_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def _proxy_headers(indent: str) -> str:
    """Every location that sets a header must repeat these: nginx inherits proxy_set_header only when a
    location sets none of its own."""
    lines = [
        "proxy_set_header Host $http_host;",
        # The first proxy overwrites what the client sent; twostep believes it (TWOSTEP_TRUSTED_PROXIES).
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
    ]
    return "\n".join(indent + line for line in lines)


def forward_auth_config(*, prefix: Path, port: int, twostep_port: int, app_port: int) -> str:
    """nginx.conf: `/` is the protected application; twostep's API, sign-in pages and static files are
    served on the same origin so that its host-only cookie reaches the forward-auth sub-request.

    docs/deployment.md shows the same server block with TLS.
    """
    user = "user root;\n" if os.geteuid() == 0 else ""
    h = _proxy_headers(" " * 12)
    return f"""{user}worker_processes 1;
error_log {prefix}/error.log info;

events {{
    worker_connections 64;
}}

http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/client_body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;

    upstream twostep {{
        server 127.0.0.1:{twostep_port};
    }}
    upstream app {{
        server 127.0.0.1:{app_port};
    }}

    server {{
        listen 127.0.0.1:{port};
        server_name localhost;

        # twostep itself: the JSON API, the sign-in pages, their static files.
        location /api/v1/ {{
            proxy_pass http://twostep;
{h}
        }}
        location /login {{
            proxy_pass http://twostep;
{h}
        }}
        location /static/ {{
            proxy_pass http://twostep;
{h}
        }}

        # The sub-request: headers (with the Cookie) but no body.
        location = /_twostep_auth {{
            internal;
            proxy_pass http://twostep/api/v1/forward-auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Cookie $http_cookie;
{h}
        }}

        # The protected application.
        location / {{
            auth_request /_twostep_auth;
            auth_request_set $twostep_user $upstream_http_remote_user;
            error_page 401 = @twostep_login;
            proxy_pass http://app;
            # Replaces any Remote-User the client sent.
            proxy_set_header Remote-User $twostep_user;
{h}
        }}
        location @twostep_login {{
            return 302 /login?next=$request_uri;
        }}
    }}
}}
"""


class Nginx:
    """`nginx -p PREFIX -c nginx.conf -g 'daemon off; pid ...;'` in the foreground, as a subprocess."""

    def __init__(self, binary: str, prefix: Path, config: str, port: int) -> None:
        self.binary = binary
        self.prefix = prefix
        self.config = config
        self.port = port
        self.origin = f"http://localhost:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def _command(self, *extra: str) -> list[str]:
        return [
            self.binary,
            "-p",
            str(self.prefix),
            "-c",
            str(self.prefix / "nginx.conf"),
            "-g",
            f"daemon off; pid {self.prefix}/nginx.pid;",
            *extra,
        ]

    def start(self, timeout: float = 15.0) -> Nginx:
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        (self.prefix / "nginx.conf").write_text(self.config)
        check = subprocess.run(self._command("-t"), capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t refused the configuration:\n{check.stderr}")
        stderr = (self.prefix / "stderr.log").open("ab")
        self.proc = subprocess.Popen(
            self._command(), stdout=stderr, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not start: {self.log()}")

    def log(self) -> str:
        out = []
        for name in ("stderr.log", "error.log"):
            path = self.prefix / name
            if path.exists():
                out.append(f"--- {name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(out)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


class _EchoHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._echo(b"")

    def do_POST(self) -> None:
        self._echo(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def _echo(self, received: bytes) -> None:
        body = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": received.decode("utf-8", "replace"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


class EchoUpstream:
    """The protected application: answers GET and POST with what it got (method, path, headers, body)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _EchoHandler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> EchoUpstream:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
