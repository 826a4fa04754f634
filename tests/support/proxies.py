"""Real reverse proxies in front of twostep and two applications on several host names (issue 13).

The configurations are the files of tests/e2e/proxies, which docs/deployment.md shows verbatim; ``render``
turns them into the test's: example.com becomes example.test, the ports those of this run, the certificate a
self-signed one for ``*.example.test``, and each proxy listens on one loopback port for every host name. The
browser is an httpx client whose connections all go to 127.0.0.1 while its URLs (and so its cookie jar, its
Host header and TLS server name) keep the real host names.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import create_engine, text

from tests.support import require_or_skip
from tests.support.nginx import EchoUpstream, Nginx, find_nginx
from tests.support.server import Server, free_port

PROXIES_DIR = Path(__file__).resolve().parent.parent / "e2e" / "proxies"
CONFIG_FILES = (
    "nginx-one-domain.conf",
    "nginx-several-domains.conf",
    "Caddyfile-one-domain",
    "Caddyfile-several-domains",
)

# The values of the files as docs/deployment.md shows them.
DOC_TWOSTEP = "127.0.0.1:9091"
DOC_APP1 = "127.0.0.1:3001"
DOC_APP2 = "127.0.0.1:3002"
DOC_CERT = "/etc/ssl/example.com.crt"
DOC_KEY = "/etc/ssl/example.com.key"


@dataclass(frozen=True)
class Ports:
    proxy: int
    twostep: int
    app1: int
    app2: int


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for example.test and *.example.test; the browser does not check it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("example.test"), x509.DNSName("*.example.test")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "example.test.crt", directory / "example.test.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def render(name: str, ports: Ports, cert: Path, key: Path) -> str:
    """The configuration file ``name`` with this run's ports, certificate and example.test names."""
    text = (PROXIES_DIR / name).read_text()
    text = text.replace(DOC_TWOSTEP, f"127.0.0.1:{ports.twostep}")
    text = text.replace(DOC_APP1, f"127.0.0.1:{ports.app1}").replace(DOC_APP2, f"127.0.0.1:{ports.app2}")
    text = text.replace(DOC_CERT, str(cert)).replace(DOC_KEY, str(key))
    text = text.replace("example.com", "example.test")
    if name.startswith("nginx"):
        return text.replace("listen 443 ssl;", f"listen 127.0.0.1:{ports.proxy} ssl;")
    # Caddy: its certificate is ours, on our port, without its admin endpoint or automatic HTTPS.
    text = re.sub(
        r"^([a-z0-9.-]+\.test) \{$",
        lambda m: f"https://{m.group(1)}:{ports.proxy} {{\n\ttls {cert} {key}",
        text,
        flags=re.M,
    )
    return "{\n\tadmin off\n\tauto_https off\n}\n\n" + text


def nginx_main(prefix: Path, http_block: str) -> str:
    """A whole nginx.conf around ``http_block`` (the file's servers), with every path in ``prefix``."""
    user = "user root;\n" if os.geteuid() == 0 else ""
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
{http_block}
}}
"""


def find_caddy() -> str | None:
    return shutil.which("caddy")


class Caddy:
    """`caddy run --config Caddyfile --adapter caddyfile` as a subprocess, its home in ``prefix``."""

    def __init__(self, binary: str, prefix: Path, config: str, port: int) -> None:
        self.binary = binary
        self.prefix = prefix
        self.config = config
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> Caddy:
        self.prefix.mkdir(parents=True, exist_ok=True)
        path = self.prefix / "Caddyfile"
        path.write_text(self.config)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.prefix),
            "XDG_DATA_HOME": str(self.prefix / "data"),
            "XDG_CONFIG_HOME": str(self.prefix / "config"),
        }
        log = (self.prefix / "caddy.log").open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "run", "--config", str(path), "--adapter", "caddyfile"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"caddy exited: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"caddy did not start: {self.log()}")

    def log(self) -> str:
        path = self.prefix / "caddy.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


class Loopback(httpx.BaseTransport):
    """Every connection to 127.0.0.1 on the URL's port; the Host header and TLS server name stay the URL's
    host (as `--host-resolver-rules="MAP *.example.test 127.0.0.1"` does for Chromium)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport(verify=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        mapped = httpx.Request(
            request.method,
            request.url.copy_with(host="127.0.0.1"),
            headers=request.headers,
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": request.url.host},
        )
        return self._inner.handle_request(mapped)

    def close(self) -> None:
        self._inner.close()


def browser() -> httpx.Client:
    """A cookie jar that speaks to the proxy on loopback, never following redirects by itself."""
    return httpx.Client(transport=Loopback(), follow_redirects=False, timeout=30)


@dataclass
class Stack:
    """twostep behind a proxy, with app1 and app2 upstreams, on https://{auth,app1,app2}.example.test:port."""

    proxy: Any
    twostep: Server
    port: int
    database_url: str

    def url(self, host: str, path: str = "/") -> str:
        return f"https://{host}.example.test:{self.port}{path}"

    @property
    def auth(self) -> str:
        return self.url("auth", "")

    def add_to_group(self, username: str, group: str) -> None:
        """Put the account in a group, with SQL of the tests' own (the operators' CLI is another issue's)."""
        engine = create_engine(self.database_url)
        try:
            with engine.begin() as conn:
                account = conn.execute(
                    text("SELECT id FROM accounts WHERE username = :u"), {"u": username}
                ).scalar_one()
                conn.execute(
                    text(
                        "INSERT INTO account_groups (account_id, name, added_at) "
                        "VALUES (:a, :n, CURRENT_TIMESTAMP)"
                    ),
                    {"a": account, "n": group},
                )
        finally:
            engine.dispose()


@contextmanager
def protected_stack(
    proxy_name: str, tmp_path: Path, config_toml: str, *, database_url: str | None = None
) -> Iterator[Stack]:
    """nginx or Caddy with the several-domains configuration, twostep (origin https://auth.example.test:port,
    the configuration file ``config_toml``) and two echoing applications. Skips (fails under CI) without
    the proxy."""
    binary = find_nginx() if proxy_name == "nginx" else find_caddy()
    if binary is None:
        require_or_skip(
            f"{proxy_name} (Debian package {'nginx-light' if proxy_name == 'nginx' else 'caddy'})"
        )
        raise AssertionError("unreachable")
    app1, app2 = EchoUpstream().start(), EchoUpstream().start()
    ports = Ports(proxy=free_port(), twostep=free_port(), app1=app1.port, app2=app2.port)
    cert, key = make_certificate(tmp_path / "tls")
    config = tmp_path / "twostep.toml"
    config.write_text(config_toml)
    twostep = Server(
        tmp_path / "twostep",
        port=ports.twostep,
        database_url=database_url,
        test_clock=False,  # refused with an https origin
        env={"TWOSTEP_ORIGIN": f"https://auth.example.test:{ports.proxy}", "TWOSTEP_CONFIG": str(config)},
    )
    proxy: Any
    if proxy_name == "nginx":
        servers = render("nginx-several-domains.conf", ports, cert, key)
        proxy = Nginx(binary, tmp_path / "nginx", nginx_main(tmp_path / "nginx", servers), ports.proxy)
    else:
        caddyfile = render("Caddyfile-several-domains", ports, cert, key)
        proxy = Caddy(binary, tmp_path / "caddy", caddyfile, ports.proxy)
    try:
        twostep.start()
        proxy.start()
        url = database_url or f"sqlite:///{tmp_path / 'twostep' / 'twostep.sqlite3'}"
        yield Stack(proxy, twostep, ports.proxy, url)
    finally:
        proxy.stop()
        twostep.stop()
        app1.stop()
        app2.stop()
