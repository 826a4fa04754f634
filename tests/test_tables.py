"""The tables keyed by the enums and the error tree: none may miss a member (a typo or a new member would
otherwise skip an e-mail, show a raw name on a page, or answer with an undocumented status)."""

from __future__ import annotations

from twostep.core import errors
from twostep.core.events import EventType
from twostep.services.notifications import NOTIFIED
from twostep.web.errors import STATUS, STATUS_DOCS, status_of
from twostep.web.pages.account import EVENT_LABELS


def test_every_notified_event_has_a_subject_and_a_text() -> None:
    assert NOTIFIED, "SEC-55 names events that are told by e-mail"
    for event, notice in NOTIFIED.items():
        assert isinstance(event, EventType), event
        assert notice.subject.strip() and notice.text.strip(), event
        assert "\n" not in notice.subject, event
    subjects = [notice.subject for notice in NOTIFIED.values()]
    assert len(set(subjects)) == len(subjects), "each event's e-mail has a subject of its own"


def test_the_sec55_events_are_the_notified_ones() -> None:
    assert set(NOTIFIED) == {
        EventType.TWO_FACTOR_ENABLED,
        EventType.TWO_FACTOR_DISABLED,
        EventType.FACTOR_ADDED,
        EventType.FACTOR_REMOVED,
        EventType.RECOVERY_CODES_REGENERATED,
        EventType.RECOVERY_CODE_USED,
        EventType.PASSWORD_CHANGED,
        EventType.SECOND_FACTOR_LOCKED,
        EventType.SECOND_FACTOR_FAILED,
        EventType.SECOND_FACTOR_ABANDONED,
        EventType.PASSKEY_ADDED_AUTOMATICALLY,  # issue 17: a factor added without verify access
        # Operators' actions that change what the holder can do (issue 12), and a new address.
        EventType.OPERATOR_LOCKED,
        EventType.OPERATOR_GROUPS_CHANGED,
        EventType.OPERATOR_DELETED,
        EventType.EMAIL_CHANGED,
    }


def test_every_event_type_has_a_label_on_the_security_log_page() -> None:
    assert set(EVENT_LABELS) == set(EventType)
    assert all(label.strip() for label in EVENT_LABELS.values())


def test_every_error_has_a_status_and_every_status_is_documented() -> None:
    tree = {
        cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.TwostepError)
    }
    assert tree - {errors.TwostepError} <= set(STATUS), tree - set(STATUS)
    assert set(STATUS.values()) == set(STATUS_DOCS)


def test_a_subclass_without_a_row_takes_its_base_classs_status() -> None:
    class Unlisted(errors.PasskeyRejected):
        pass

    assert status_of(Unlisted()) == STATUS[errors.PasskeyRejected] == 401
    assert status_of(errors.PasskeyRegistrationRejected()) == 400
