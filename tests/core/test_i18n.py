"""The message catalogues (issue 19): every message of the code and the templates is in the catalogue
template, and Slovenian and German translate each one, none fuzzy, with the same placeholders."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from twostep import i18n
from twostep.core.errors import InvalidRequest, SignupClosed

ROOT = Path(__file__).resolve().parents[2]
LOCALES = ROOT / "src" / "twostep" / "locales"
TRANSLATED = ("sl", "de")
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


def _ids(catalog: Catalog) -> set[str]:
    return {m.id if isinstance(m.id, str) else m.id[0] for m in catalog if m.id}


def _catalog(path: Path, locale: str) -> Catalog:
    with path.open("rb") as f:
        return read_po(f, locale=locale)


def test_the_template_has_every_message_of_the_code() -> None:
    """`make i18n` was run: the messages extracted now from src are those of messages.pot."""
    with (ROOT / "babel.cfg").open(encoding="utf-8") as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)  # type: ignore[no-untyped-call]
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "pgettext": ((1, "c"), 2), "N_": None}
    found = {
        msg if isinstance(msg, str) else msg[0]
        for _file, _line, msg, _comments, _context in extract_from_dir(
            ROOT / "src", method_map, options_map, keywords=keywords
        )
        if msg
    }
    template = _ids(_catalog(LOCALES / "messages.pot", "en"))
    assert found - template == set(), "run `make i18n`: messages missing from messages.pot"
    assert template - found == set(), "run `make i18n`: messages.pot has messages the code no longer has"


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_message_is_translated_and_none_is_fuzzy(language: str) -> None:
    template = _ids(_catalog(LOCALES / "messages.pot", "en"))
    catalog = _catalog(LOCALES / language / "LC_MESSAGES" / "messages.po", language)
    assert not catalog.fuzzy, f"{language}: the catalogue's header is marked fuzzy"
    assert template - _ids(catalog) == set(), f"{language}: messages missing; run `make i18n`"
    empty = [
        m.id for m in catalog if m.id and not all(m.string if isinstance(m.string, tuple) else [m.string])
    ]
    assert empty == [], f"{language}: untranslated messages"
    fuzzy = [m.id for m in catalog if m.id and m.fuzzy]
    assert fuzzy == [], f"{language}: fuzzy messages (check them, then remove the flag)"


@pytest.mark.parametrize("language", TRANSLATED)
def test_translations_keep_the_placeholders(language: str) -> None:
    catalog = _catalog(LOCALES / language / "LC_MESSAGES" / "messages.po", language)
    for message in catalog:
        if not message.id:
            continue
        ids = [message.id] if isinstance(message.id, str) else list(message.id)
        strings = [message.string] if isinstance(message.string, str) else list(message.string or ())
        wanted = set().union(*(set(PLACEHOLDER.findall(i)) for i in ids))
        for string in strings:
            got = set(PLACEHOLDER.findall(string))
            # A singular form may leave the number out ("one session"); it never invents a placeholder.
            assert got <= wanted, f"{language}: {message.id!r} -> {string!r}"
            if isinstance(message.id, str):
                assert got == wanted, f"{language}: {message.id!r} -> {string!r}"


def test_the_catalogues_translate_and_unknown_languages_fall_back_to_english() -> None:
    assert i18n.translations("de").gettext("Sign in") == "Anmelden"
    assert i18n.translations("sl").gettext("Sign in") == "Prijava"
    assert i18n.translations("fr").gettext("Sign in") == "Sign in"
    assert i18n.translations(i18n.PSEUDO).gettext("Sign in") == "⟦Sign in⟧"


def test_slovenian_has_its_dual() -> None:
    t = i18n.translations("sl")
    forms = [t.ngettext("%(num)d minute", "%(num)d minutes", n) % {"num": n} for n in (1, 2, 3, 5, 101)]
    assert forms == ["1 minuto", "2 minuti", "3 minute", "5 minut", "101 minuto"]


def test_an_errors_values_are_put_in_after_its_message_is_translated() -> None:
    template = "This invitation is for the username %(username)s; sign up with that username."
    exc = InvalidRequest(template, field="username", params={"username": "ana%(x)s"})
    assert exc.message == template, "the template is kept, for the catalogue"
    assert (
        str(exc) == exc.text() == "This invitation is for the username ana%(x)s; sign up with that username."
    )
    assert exc.text(i18n.translations("sl").gettext) == (
        "Povabilo velja za uporabniško ime ana%(x)s; ustvarite račun s tem uporabniškim imenom."
    )
    # Without values a message is used as it is, a per cent sign too.
    assert InvalidRequest("100 % sure").text() == "100 % sure"
    assert (
        SignupClosed("invitation_required")
        .text(i18n.translations("de").gettext)
        .startswith("Für die Registrierung auf dieser Website brauchen Sie eine Einladung.")
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("de-AT,de;q=0.9,en;q=0.5", "de"),
        ("fr-FR, sl;q=0.4, de;q=0.3", "sl"),
        ("en-GB", "en"),
        ("fr, it", None),
        ("de;q=0, sl", "sl"),
        ("", None),
        ("de;q=abc, sl;q=0.1", "sl"),
    ],
)
def test_accept_language_is_negotiated_with_its_weights(header: str, expected: str | None) -> None:
    assert i18n.negotiate(header) == expected


def test_times_are_in_the_locale_format_with_the_zone_named() -> None:
    at = datetime(2026, 12, 2, 13, 5, tzinfo=UTC)
    # CLDR's long formats (Babel), the zone named by the locale's pattern.
    assert i18n.format_datetime(at, "de") == "2. Dezember 2026, 13:05:00 UTC"
    assert i18n.format_datetime(at, "sl") == "2. december 2026 13:05:00 UTC"
    assert i18n.format_datetime(at, "en").startswith("December 2, 2026, 1:05:00")
    assert i18n.format_datetime(at, "en").endswith("PM UTC")


TEMPLATES = ROOT / "src" / "twostep" / "web" / "templates"
_JINJA = re.compile(r"\{%-?\s*trans\b.*?endtrans\s*-?%\}|\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_HIDDEN = re.compile(
    r"<(script|style|svg)\b.*?</\1>|\{%\s*block main_class\s*%\}.*?\{%\s*endblock\s*%\}", re.S | re.I
)
_TAG = re.compile(r"<[^>]*>", re.S)
_TEXT_ATTRIBUTE = re.compile(r'\b(?:aria-label|alt|title|placeholder)="([^"{]*)"')
# Words a template may carry as they are: the service's name.
_AS_IS = {"twostep"}


@pytest.mark.parametrize("template", sorted(p.name for p in TEMPLATES.glob("*.html")), ids=str)
def test_templates_have_no_english_outside_the_catalogue(template: str) -> None:
    """Every template's words go through {% trans %} or _(): a page added later (by any branch) cannot ship
    English text that the pseudo-language test in Chromium does not walk to."""
    full = source = (TEMPLATES / template).read_text(encoding="utf-8")
    source = _HIDDEN.sub(" ", source)
    source = _JINJA.sub(" ", source)
    attributes = " ".join(_TEXT_ATTRIBUTE.findall(source))
    text = _TAG.sub(" ", source) + " " + attributes
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z'\u2019-]+", text) if w not in _AS_IS]
    assert words == [], f"{template}: wrap these in {{% trans %}} or _(): {words}"
    # Sentences given to macros ({{ field("name", "Label", hint="...") }}): a literal starting with a capital
    # letter inside {{ }} must be the argument of _().
    expressions = " ".join(re.findall(r"\{\{(.*?)\}\}", _HIDDEN.sub(" ", full), re.S))
    bare = re.findall(r"""(?<!_\()(["'])([A-Z][^"']*)\1""", expressions)
    assert [b for _q, b in bare] == [], f"{template}: wrap these in _(): {bare}"
