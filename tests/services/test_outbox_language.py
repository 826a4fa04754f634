"""The summary of repeats that delivery adds to a message (H13), in the account's language (issue 19)."""

from __future__ import annotations

from datetime import UTC, datetime

from twostep import i18n
from twostep.services.outbox import summary_lines
from twostep.storage.outbox import OutboxRow

AT = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)


def _row(occurrences: int, since: datetime | None) -> OutboxRow:
    return OutboxRow(
        id=1,
        recipient="a@example.org",
        subject="s",
        body="b",
        message_id="<m@x>",
        created_at=AT,
        attempts=0,
        occurrences=occurrences,
        last_at=AT,
        last_ip="192.0.2.7",
        last_user_agent=None,
        since=since,
        account_id=1,
    )


def test_the_summary_is_in_the_accounts_language_and_english_is_unchanged() -> None:
    english = summary_lines(_row(3, AT))
    assert english[0].startswith("This message sums up repeats: this happened 3 times since our last message")
    assert "browser unknown" in english[1]
    german = summary_lines(_row(3, AT), i18n.translations("de"))
    assert german[0].startswith("Diese Nachricht fasst Wiederholungen zusammen")
    assert "3-mal" in german[0] and "2026-12-02 09:30:00 UTC" in german[0]
    assert "Browser unbekannt" in german[1]
    slovenian = summary_lines(_row(1, AT), i18n.translations("sl"))
    assert slovenian == [
        "To sporočilo povzema ponovitve: od našega zadnjega sporočila o tem, poslanega "
        "2026-12-02 09:30:00 UTC, se je to zgodilo enkrat. "
        "Sporočilo iste vrste pošljemo največ enkrat na 15 minut."
    ]
    assert summary_lines(_row(1, None), i18n.translations("de")) == []
