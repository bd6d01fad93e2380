"""Kafka plumbing: the only module that imports kafka-python.

Services see `Publisher` (acks=all, idempotent, bounded waits) and `Subscription` (manual offset
commits), plain `Record`s and `BrokerUnavailable`; nothing else of the client leaks out.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata, TopicPartition

from shared.settings import KafkaSecurity, Settings
from shared.topics import topic_configs

log = logging.getLogger(__name__)


def security() -> dict[str, Any]:
    """Every client's security options (SASL, TLS), from the `TOUCHLINE_KAFKA_*` environment."""
    return KafkaSecurity().client_options()


class BrokerUnavailable(Exception):
    """The broker did not acknowledge in time; nothing may be reported as accepted."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    topic: str
    key: str | None
    value: bytes


class Publisher:
    """An idempotent acks=all producer whose every wait is bounded.

    The underlying client is created on first use (and again after a failed start), so a service
    starts while the broker is down and recovers by itself when it comes back.
    """

    def __init__(self, bootstrap: str, *, client_id: str, timeout_s: float = 5.0) -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._timeout_s = timeout_s
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, settings: Settings, client_id: str) -> Publisher:
        """A publisher on the settings' broker whose waits are bounded by their produce timeout."""
        return cls(
            settings.kafka_bootstrap, client_id=client_id, timeout_s=settings.produce_timeout_s
        )

    def _client(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                timeout_ms = int(self._timeout_s * 1000)
                try:
                    self._producer = KafkaProducer(
                        bootstrap_servers=self._bootstrap,
                        client_id=self._client_id,
                        acks="all",
                        enable_idempotence=True,
                        linger_ms=2,
                        batch_size=256 * 1024,
                        max_block_ms=timeout_ms,
                        bootstrap_timeout_ms=timeout_ms,
                        request_timeout_ms=max(timeout_ms, 3000),
                        delivery_timeout_ms=max(2 * timeout_ms, 6000),
                        reconnect_backoff_max_ms=1000,
                        **security(),
                    )
                except KafkaError as exc:
                    raise BrokerUnavailable(f"cannot connect to broker: {exc}") from exc
            return self._producer

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Send all messages and return once the broker acknowledged every one of them.

        Raises BrokerUnavailable if that does not happen within the timeout; some of the messages
        may still have been written (consumers deduplicate by message id).
        """
        if not messages:
            return
        deadline = time.monotonic() + self._timeout_s
        producer = self._client()
        try:
            futures = [
                producer.send(m.topic, key=m.key.encode() if m.key else None, value=m.value)
                for m in messages
            ]
            # No flush(): it would send every partly filled batch of every concurrent request at
            # once, in smaller produce requests; linger_ms batches them, the futures say when done.
            for future in futures:
                future.get(timeout=max(deadline - time.monotonic(), 0.001))
        except KafkaError as exc:
            # Start afresh next time: after a broker outage an idempotent producer can be left
            # with sequence state the broker no longer knows, and never recover by itself.
            self.close(timeout_s=0)
            raise BrokerUnavailable(f"broker did not acknowledge: {exc}") from exc

    def close(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            if self._producer is not None:
                try:
                    self._producer.close(timeout=timeout_s)
                except KafkaError as exc:
                    # Records of requests already answered 503 may still be pending: drop them.
                    log.warning("producer closed with undelivered records: %s", exc)
                self._producer = None


class Subscription:
    """A consumer-group member with manual offset commits (no auto-commit, ever)."""

    def __init__(
        self,
        bootstrap: str,
        *,
        group_id: str,
        topics: Iterable[str],
        max_poll_interval_ms: int,
        client_id: str | None = None,
    ) -> None:
        session_timeout_ms = min(10_000, max_poll_interval_ms)
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group_id,
            client_id=client_id or group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=max_poll_interval_ms,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(session_timeout_ms // 3, 100),
            request_timeout_ms=max(session_timeout_ms + 5000, 30_000),
            **security(),
        )
        self._consumer.subscribe(list(topics))

    def poll(self, *, max_records: int, timeout_ms: int) -> list[Record]:
        batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        return [
            Record(m.topic, m.partition, m.offset, m.key, m.value)
            for messages in batches.values()
            for m in messages
        ]

    def commit(self, records: Sequence[Record]) -> bool:
        """Commit the offsets just past the given records, per partition; False if refused."""
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            if tp not in offsets or offsets[tp].offset <= r.offset:
                offsets[tp] = OffsetAndMetadata(r.offset + 1, "", -1)
        if not offsets:
            return True
        try:
            self._consumer.commit(offsets)
        except KafkaError as exc:
            # Lost the partitions in a rebalance: whoever has them now replays these records,
            # and the processed-message table drops them, so nothing is lost or counted twice.
            log.warning("offset commit failed, records will be replayed: %s", exc)
            return False
        return True

    def progress(
        self, records: Sequence[Record], *, done: bool
    ) -> list[tuple[str, int, int | None, int]]:
        """Per partition of `records`: (topic, partition, end offset as of the last fetch, next
        offset to process), before (`done` false) or after processing them: what lag is."""
        nxt: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offset = r.offset + 1 if done else r.offset
            nxt[tp] = (max if done else min)(nxt.get(tp, offset), offset)
        assigned = self._consumer.assignment()
        return [
            (tp.topic, tp.partition, self._consumer.highwater(tp), offset)
            for tp, offset in nxt.items()
            if tp in assigned
        ]

    def rewind(self, records: Sequence[Record]) -> None:
        """Seek back to the first of the given records per partition, to process them again."""
        first: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            first[tp] = min(first.get(tp, r.offset), r.offset)
        assigned = self._consumer.assignment()
        for tp, offset in first.items():
            if tp in assigned:
                self._consumer.seek(tp, offset)

    def rewind_to_start(self) -> None:
        """Read every assigned partition again from its first offset."""
        assigned = list(self._consumer.assignment())
        if assigned:
            self._consumer.seek_to_beginning(*assigned)

    def assigned(self) -> set[tuple[str, int]]:
        """The partitions this member holds now (no broker round trip)."""
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages behind the end of each assigned partition, from the consumer's own metadata."""
        lags: dict[tuple[str, int], int] = {}
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            if end is None:
                continue
            lags[(tp.topic, tp.partition)] = max(end - self._consumer.position(tp), 0)
        return lags

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class TopicReader:
    """Reads every partition of one topic from its beginning, with no consumer group (each reader
    sees the whole topic): for state built from a topic, like ingest's suppression list.

    Where a partition ends comes from the fetches' high watermarks: the embedded broker's
    ListOffsets answers the start of the last record batch instead of the end of the partition."""

    def __init__(self, bootstrap: str, topic: str, *, client_id: str) -> None:
        self._topic = topic
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a position the log no longer has: its start
            request_timeout_ms=10_000,
            metadata_max_age_ms=5_000,  # a recreated topic is seen within seconds
            **security(),
        )
        self._exists: bool | None = None  # unknown until the topic was first looked up
        self._topic_id: object = None  # the broker's id of the topic being read

    def poll(self, timeout_ms: int) -> list[bytes]:
        """The next values; assigns the topic's partitions once the topic exists."""
        if not self._consumer.assignment():
            partitions = self._consumer.partitions_for_topic(self._topic)
            self._exists = bool(partitions)
            if not partitions:  # no topic yet: nothing was ever written to it
                time.sleep(timeout_ms / 1000)
                return []
            self._read_from_start(partitions)
        batches = self._consumer.poll(timeout_ms=timeout_ms)
        return [m.value for messages in batches.values() for m in messages]

    def _read_from_start(self, partitions: Iterable[int]) -> None:
        assigned = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        self._consumer.seek_to_beginning(*assigned)
        self._topic_id = self._metadata_topic_id()

    def _metadata_topic_id(self) -> object:
        """The topic's id in the client's metadata (None from brokers older than Kafka 2.8)."""
        return self._consumer._cluster.topic_id(self._topic)

    def rewind_if_replaced(self) -> bool:
        """Read from the start again when the topic is not the one being read: it has another id
        or other partitions (the broker restarted without its log and the topic was made again:
        positions in the old log would skip the start of the new one), or, from brokers without
        topic ids, a partition ended before the position reached. True if so."""
        assigned = self._consumer.assignment()
        if not assigned:
            return False
        partitions = self._consumer.partitions_for_topic(self._topic)
        topic_id = self._metadata_topic_id()
        if self._topic_id is None:
            self._topic_id = topic_id
        if partitions and (
            partitions != {tp.partition for tp in assigned}
            or (topic_id is not None and topic_id != self._topic_id)
        ):
            self._read_from_start(partitions)
            return True
        if all(self._consumer.position(tp) <= self._end(tp) for tp in assigned):
            return False
        self._consumer.seek_to_beginning(*assigned)
        return True

    def caught_up(self) -> bool:
        """True once every partition has been read to the end its last fetch reported (or the
        topic did not exist when first looked up)."""
        if self._exists is False:
            return True
        assigned = self._consumer.assignment()
        return bool(assigned) and all(
            self._consumer.position(tp) >= self._end(tp) for tp in assigned
        )

    def _end(self, tp: TopicPartition) -> float:
        """The end of the partition as its last fetch saw it (unbounded before any fetch)."""
        end = self._consumer.highwater(tp)
        return float("inf") if end is None else end

    def close(self) -> None:
        self._consumer.close(autocommit=False)


def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int,
    *,
    replication_factor: int = 1,
    min_insync_replicas: int | None = None,
) -> None:
    """Create the topics that do not exist yet (replication factor 1 is fine only in dev; topics
    that exist keep their settings)."""
    admin = _admin(bootstrap)
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(
                t,
                partitions,
                replication_factor,
                topic_configs=topic_configs(t, min_insync_replicas=min_insync_replicas),
            )
            for t in topics
            if t not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
    finally:
        admin.close()


def broker_reachable(bootstrap: str, timeout_s: float = 0.5) -> bool:
    """True when the cluster answers a metadata request within the timeout."""
    try:
        admin = _admin(bootstrap, timeout_ms=int(timeout_s * 1000))
    except KafkaError:
        return False
    try:
        admin.list_topics()
        return True
    except KafkaError:
        return False
    finally:
        admin.close()


def _admin(bootstrap: str, timeout_ms: int = 10_000) -> Any:
    return KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="touchline-admin",
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
        **security(),
    )


def committed_offsets(
    bootstrap: str, group: str, timeout_s: float = 0.5
) -> dict[tuple[str, int], int]:
    """A consumer group's committed offsets, (topic, partition) -> next offset to process."""
    try:
        admin = _admin(bootstrap, timeout_ms=int(timeout_s * 1000))
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot connect to broker: {exc}") from exc
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    except KafkaError as exc:
        raise BrokerUnavailable(f"broker did not answer: {exc}") from exc
    finally:
        admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


def consumer_lags(
    bootstrap: str, groups: dict[str, list[str]], timeout_s: float = 5.0
) -> dict[str, dict[tuple[str, int], int]]:
    """Per consumer group: events of its topics (the given ones, and any it committed on) between
    its committed offset and the end of each partition, i.e. accepted but not yet applied.

    End offsets come from a fetch's high watermark: the embedded broker's ListOffsets answers the
    start of the last record batch instead of the end of the partition."""
    timeout_ms = int(timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    try:
        admin = _admin(bootstrap, timeout_ms=timeout_ms)
        reader = KafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id="touchline-lag",
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=1024,
            request_timeout_ms=max(timeout_ms, 1000),
            **security(),
        )
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot connect to broker: {exc}") from exc
    try:
        committed = {
            group: {
                (tp.topic, tp.partition): meta.offset
                for tp, meta in admin.list_group_offsets({group: None}).get(group, {}).items()
            }
            for group in groups
        }
        partitions = {tp for offsets in committed.values() for tp in offsets}
        for topics in groups.values():
            for topic in topics:
                partitions |= {(topic, p) for p in reader.partitions_for_topic(topic) or ()}
        tps = [TopicPartition(t, p) for t, p in sorted(partitions)]
        listed = reader.end_offsets(tps) if tps else {}
        starts = reader.beginning_offsets(tps) if tps else {}
        reader.assign(tps)
        for tp in tps:  # at or before the last batch: its fetch answers the real end
            reader.seek(tp, max(listed[tp] - 1, 0))
        while any(reader.highwater(tp) is None for tp in tps):
            if time.monotonic() > deadline:
                raise BrokerUnavailable("no end offsets from the broker in time")
            reader.poll(timeout_ms=100)
        ends = {(tp.topic, tp.partition): reader.highwater(tp) or 0 for tp in tps}
        first = {(tp.topic, tp.partition): offset for tp, offset in starts.items()}
    except KafkaError as exc:
        raise BrokerUnavailable(f"broker did not answer: {exc}") from exc
    finally:
        reader.close(autocommit=False)
        admin.close()
    return {
        group: {
            tp: max(ends[tp] - committed[group].get(tp, first[tp]), 0)
            for tp in ends
            if tp in committed[group] or tp[0] in groups[group]
        }
        for group in groups
    }


def consumer_groups(bootstrap: str, timeout_s: float = 2.0) -> list[str]:
    """The consumer groups the broker knows."""
    try:
        admin = _admin(bootstrap, timeout_ms=int(timeout_s * 1000))
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot connect to broker: {exc}") from exc
    try:
        return sorted(g["group_id"] for g in admin.list_groups())
    except KafkaError as exc:
        raise BrokerUnavailable(f"broker did not answer: {exc}") from exc
    finally:
        admin.close()
