"""The form fields of the pages, with the same rules as the JSON API's strings (web/inputs.py, H10): no
control characters; passwords (only ever hashed) no NUL. A refused field answers the 422 page of PageRoute."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import Form
from pydantic import AfterValidator

from twostep.web.inputs import json_without_controls, secret_without_nul, text_without_controls

FormStr = Annotated[str, Form(max_length=4096), AfterValidator(text_without_controls)]
FormSecret = Annotated[str, Form(max_length=4096), AfterValidator(secret_without_nul)]
CredentialField = Annotated[str, Form(max_length=60_000), AfterValidator(json_without_controls)]


def parse_credential(raw: str) -> dict[str, object] | None:
    """The credential JSON that static/webauthn.js put in a form field; None when it is not an object."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
