"""Static checks over the source tree (security.md SEC-13, SEC-23, SEC-57)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "twostep"
PY_FILES = sorted(SRC.rglob("*.py"))


def test_SEC_57_no_module_random_and_no_uuid_as_a_secret() -> None:
    offenders = []
    for path in PY_FILES:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "random" for a in node.names):
                offenders.append(f"{path}: import random")
            if isinstance(node, ast.ImportFrom) and node.module == "random":
                offenders.append(f"{path}: from random import")
            if isinstance(node, ast.Attribute) and node.attr in ("uuid4", "uuid1"):
                offenders.append(f"{path}: {node.attr}")
    assert PY_FILES and offenders == []


def test_SEC_57_secrets_module_makes_every_token() -> None:
    text = "\n".join(p.read_text() for p in PY_FILES)
    assert "secrets.token_urlsafe(32)" in text  # session ids: 256 bits
    assert "secrets.token_bytes" in text


def test_SEC_13_no_password_hints_or_security_questions() -> None:
    pattern = re.compile(r"password_hint|security_question|secret_question", re.IGNORECASE)
    hits = [
        str(p)
        for p in SRC.rglob("*")
        if p.is_file() and p.suffix in (".py", ".html") and pattern.search(p.read_text())
    ]
    assert hits == []


def test_SEC_23_no_equality_comparison_on_codes_in_verifiers() -> None:
    """Codes and recovery secrets are compared with hmac.compare_digest or argon2, never with ==."""
    for name in ("totp.py", "recovery_codes.py"):
        tree = ast.parse((SRC / "core" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                assert not names & {"code", "candidate", "expected", "secret", "normalized"}, (
                    name,
                    node.lineno,
                )
