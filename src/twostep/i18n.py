"""Languages: the message catalogues (Babel), the language of each request, and dates in a locale's format.

English is the source language: the messages are written in English in the code and the templates, and
``locales/<language>/LC_MESSAGES/messages.po`` translates them (``make i18n`` extracts and updates them). The
catalogues are read from the ``.po`` files when first used (no compiled ``.mo`` to build or commit); fuzzy
entries are left out, so a message only counts as translated once a person has checked it.

The language of a request is chosen in this order: the account's stored preference (signed in), the
language cookie (the menu, before signing in), ``Accept-Language``, the operator's ``default_language``.
``LocaleMiddleware`` (web) puts a ``Chosen`` in ``CURRENT`` for the request; ``gettext`` and the templates
read it. The e-mails use the account's language, given to ``translations`` directly.

The pseudo-language ``qps`` (the tag browsers and tools use for a pseudo-locale) wraps every message in
⟦…⟧; it is never in the menu, and only the tests ask for it, to find text that is not translated.
"""

from __future__ import annotations

import ast
import functools
import gettext as _gettext
import importlib
import io
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from babel import Locale
from babel.core import negotiate_locale
from babel.dates import format_datetime as _format_datetime
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
SOURCE = "en"
PSEUDO = "qps"
# The languages of the menu, each named in itself (never translated: a reader looks for their own).
LANGUAGES: dict[str, str] = {"en": "English", "sl": "Slovenščina", "de": "Deutsch"}
# Languages written right to left (none yet; the pages' `dir` attribute comes from here).
RTL: frozenset[str] = frozenset()
COOKIE = "twostep_lang"


def N_(message: str) -> str:
    """Mark ``message`` for the catalogue without translating it here (it is translated where it is shown)."""
    return message


def is_language(value: str | None) -> bool:
    return value in LANGUAGES or value == PSEUDO


@functools.cache
def translations(language: str) -> _gettext.NullTranslations:
    """The catalogue of ``language``: English (the source) for an unknown one."""
    if language == PSEUDO:
        return _pseudo()
    path = LOCALES_DIR / language / "LC_MESSAGES" / "messages.po"
    if language == SOURCE or language not in LANGUAGES or not path.is_file():
        return _gettext.NullTranslations()
    with path.open("rb") as po:
        catalog = read_po(po, locale=language)
    return _compiled(catalog)


def _compiled(catalog: Catalog) -> Translations:
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return Translations(fp=buffer)


def _pseudo() -> Translations:
    with (LOCALES_DIR / "messages.pot").open("rb") as pot:
        template = read_po(pot, locale="en")
    catalog = Catalog(locale="en")
    for message in template:
        if not message.id:
            continue
        if isinstance(message.id, tuple | list):
            catalog.add(message.id, tuple(f"⟦{m}⟧" for m in message.id), context=message.context)
        else:
            catalog.add(message.id, f"⟦{message.id}⟧", context=message.context)
    return _compiled(catalog)


def negotiate(accept_language: str | None) -> str | None:
    """The best of our languages for an ``Accept-Language`` header (q-values honoured), or None."""
    if not accept_language:
        return None
    weighted: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip()
        if not tag or tag == "*" or len(tag) > 35:
            continue
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                continue
        if q > 0:
            weighted.append((-q, position, tag))
    preferred = [tag for _, _, tag in sorted(weighted)]
    return negotiate_locale(preferred, [*LANGUAGES, PSEUDO], sep="-")


@dataclass
class Chosen:
    """The language of one request; a signed-in account's stored preference replaces it when known."""

    language: str = SOURCE

    def use_account_preference(self, stored: str | None) -> None:
        if stored in LANGUAGES:
            self.language = stored


CURRENT: ContextVar[Chosen | None] = ContextVar("twostep_language", default=None)


def current() -> str:
    chosen = CURRENT.get()
    return chosen.language if chosen is not None else SOURCE


def gettext(message: str) -> str:
    return translations(current()).gettext(message)


def translate(message: str, params: Mapping[str, object] | None = None) -> str:
    """``message`` (marked with N_) in the request's language, then ``params`` put in its ``%(name)s``
    places: after translating, so that a translation can move them. The same as ``TwostepError.text``, for
    a message that is not an error's."""
    text = gettext(message)
    return text % params if params else text


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(current()).ngettext(singular, plural, n)


def pgettext(context: str, message: str) -> str:
    return translations(current()).pgettext(context, message)


def npgettext(context: str, singular: str, plural: str, n: int) -> str:
    return translations(current()).npgettext(context, singular, plural, n)


def babel_locale(language: str) -> Locale:
    return Locale.parse(SOURCE if language == PSEUDO or language not in LANGUAGES else language)


def format_datetime(value: datetime, language: str | None = None) -> str:
    """A time in the locale's format with its time zone named (UTC: the server keeps and shows UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return _format_datetime(value, "long", tzinfo=UTC, locale=babel_locale(language or current()))


def extract_error_messages(
    fileobj: object, keywords: object, comment_tags: object, options: object
) -> Iterator[tuple[int, str | None, str, list[str]]]:
    """A Babel extractor (babel.cfg) for core: each error class's ``message = "..."``, and the sentences of a
    module's ``MESSAGES`` tuple (computed ones, such as the password rules), so that core's messages reach the
    catalogues without a marker in core (core imports no Babel)."""
    read = getattr(fileobj, "read")  # noqa: B009 (Babel passes a binary file object)
    tree = ast.parse(read())
    filename = str(getattr(fileobj, "name", ""))
    if "/twostep/core/" in filename.replace("\\", "/"):
        module_name = "twostep.core." + Path(filename).stem
        module = importlib.import_module(module_name)
        for message in getattr(module, "MESSAGES", ()):
            yield 1, None, message, [f"One of {module_name}.MESSAGES."]
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for statement in node.body:
            if (
                isinstance(statement, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "message" for t in statement.targets)
                and isinstance(statement.value, ast.Constant)
                and isinstance(statement.value.value, str)
            ):
                yield statement.lineno, None, statement.value.value, [f"The message of {node.name}."]


def text_direction(language: str) -> str:
    return "rtl" if language in RTL else "ltr"
