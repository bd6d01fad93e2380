"""The pure parts of erasure: id hashes, which ids an event carries, ingest's suppression list."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from services.ingest.suppressions import SuppressionList
from shared.events import Erasure
from shared.privacy import erasure, event_ids, id_hash, suppression_seed
from tests.support.lifecycle import day, identify, touch


def test_id_hash_is_stable_hex_and_distinguishes_ids() -> None:
    assert id_hash("user-1") == id_hash("user-1")
    assert len(id_hash("user-1")) == 32 and int(id_hash("user-1"), 16) >= 0
    assert id_hash("user-1") != id_hash("user-2")
    assert "user-1" not in id_hash("user-1")


def test_event_ids_are_every_id_an_event_names() -> None:
    assert event_ids(identify(day(0), "u", "a")) == ["u", "a"]
    assert event_ids(touch(day(0), user="u", kind="alias", previous="old")) == ["u", "old"]
    assert event_ids(touch(day(0), anon="a")) == ["a"]


def test_suppression_list_matches_any_id_of_an_event_and_skips_unreadable_messages() -> None:
    suppressions = SuppressionList("127.0.0.1:1")  # never started: fed by hand
    suppressions.add(erasure(["erased-user", "erased-anon"], origin="test").value)
    suppressions.add(b"not an erasure")
    suppressions.add(b'{"schema": 1, "erasure_id": "x", "ids": [], "origin": "t"}')
    assert suppressions.suppressed(touch(day(0), user="erased-user"))
    assert suppressions.suppressed(touch(day(0), anon="erased-anon"))
    assert suppressions.suppressed(identify(day(0), "someone-new", "erased-anon"))
    assert suppressions.suppressed(touch(day(0), user="new", kind="alias", previous="erased-user"))
    assert not suppressions.suppressed(touch(day(0), user="someone-else"))


def test_erasure_messages_are_keyed_by_their_own_id_with_sorted_unique_ids() -> None:
    message = erasure(["b", "a", "b"], origin="lifecycle")
    parsed = Erasure.model_validate_json(message.value)
    assert message.key == parsed.erasure_id
    assert parsed.ids == ["a", "b"] and parsed.origin == "lifecycle"
    assert parsed.requested_at <= datetime.now(UTC)
    assert erasure(["a"], origin="x").key != erasure(["a"], origin="x").key


def test_an_erasure_names_ids_or_well_formed_id_hashes() -> None:
    seed = Erasure.model_validate_json(suppression_seed([id_hash("gone")], origin="seed").value)
    assert seed.ids == [] and seed.id_hashes == [id_hash("gone")]
    now = datetime.now(UTC)
    with pytest.raises(ValidationError, match="at least one"):
        Erasure(erasure_id="e", requested_at=now, origin="t")
    with pytest.raises(ValidationError, match="32 lowercase hex"):
        Erasure(erasure_id="e", id_hashes=["gone"], requested_at=now, origin="t")


def test_suppression_list_takes_republished_id_hashes() -> None:
    suppressions = SuppressionList("127.0.0.1:1")  # never started: fed by hand
    suppressions.add(suppression_seed([id_hash("erased-user")], origin="seed").value)
    assert suppressions.suppressed(touch(day(0), user="erased-user"))
    assert not suppressions.suppressed(touch(day(0), user="someone-else"))
