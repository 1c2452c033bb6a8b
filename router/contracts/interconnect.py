"""The carrier interconnect over MQTT: topics, payloads and codes.

Every payload except the status is a msgspec **msgpack** map (field names below; optional
fields with default values may be omitted by the sender). Build payloads with the codecs
at the bottom (``SUBMIT_BATCH``, ``RESULT_BATCH``, ``REPORT_BATCH``): one Encoder and one
Decoder per type, built once.

Topics (``<id>`` a carrier id, ``<host>`` a carrier process, ``<router>`` a router; all QoS 1)
--------------------------------------------------------------------------------------------

Every topic a carrier process publishes names the process, and the broker's ACL lets a
process (its MQTT identity is its host id) publish only on its own topics: so a topic
tells a router which process sent a message, and no process can speak for another.

- ``supernet/carriers/host/<host>/carriers``: retained ``HostDirectory``, the carriers a
  process hosts (cleared when it stops cleanly). Routers read it to address submits.
- ``supernet/carriers/host/<host>/submit``: router -> carrier process, ``SubmitBatch``
  whose items name their ``carrier``: one MQTT message for many carriers of one host. A
  carrier that no directory names cannot be reached.
- ``<reply_to>/<host>`` (``reply_to`` is the router's ``supernet/router/<router>/results``):
  carrier process -> the submitting router, ``SubmitResultBatch`` (results name their
  carrier); ``result_topic``;
- ``supernet/carriers/host/<host>/dlr``: carrier process -> routers,
  ``DeliveryReportBatch`` (reports name their carrier);
- ``supernet/carriers/host/<host>/carrier/<id>/status``: retained, ``online`` /
  ``offline``, the carrier's own status as its process announces it;
- ``supernet/carriers/host/<host>/status``: retained, ``online`` / ``offline``, the
  process itself (its connection's last-will is ``offline``). A carrier counts as online
  only while its process is online, names it in its directory, and announced it online:
  so a killed process takes all its carriers offline at once, through one will.
- ``supernet/carriers/host/<host>/dlr-ack``: router -> carrier process,
  ``ReportAckBatch``: the reports whose receipts are durable in Kafka (an
  application-level acknowledgement, as SMPP's deliver_sm_resp). A carrier process keeps
  every report it published until it is acknowledged, and publishes it again
  (``resent`` + 1) after ``REPORT_RESEND_S`` to the shared group, so a report held by a
  router that died is handled by another.

Why batches per process and not per carrier: aiomqtt over paho reaches about 2,700 QoS 1
publishes a second on these machines (4,500 calling paho directly), whatever the payload
size. Traffic spread over hundreds of carriers would make per-carrier batches of one or
two messages and cap the whole engine at a few thousand messages a second; a batch per
carrier process carries up to ``MAX_BATCH`` messages for any mix of its carriers.

- Routers read delivery reports through one shared subscription for all carrier
  processes, ``$share/<group>/supernet/carriers/host/+/dlr``
  (``dlr_shared_subscription(group)``), so each report is handled by one router.
- Status payloads are plain UTF-8 text, not msgpack, so that ``mosquitto_sub`` and the
  broker's last-will can carry them: ``online`` when the carrier is up and answering;
  ``offline`` when it stopped (scenario outage). Subscribe to ``CARRIER_STATUS_ALL`` and
  ``HOST_STATUS_ALL`` to learn all of them (retained).
- An ``offline`` carrier does not answer submits at all (no result): the router's submit
  timeout applies. Its delivery reports for earlier messages are held until it is back.

Submit (router -> carrier), ``SubmitBatch``
-------------------------------------------
``{"carrier": str, "reply_to": str, "items": [SubmitItem, ...]}`` (``carrier`` is empty:
every item names its carrier).

``SubmitItem``: ``carrier`` (str, the carrier of the host that should take it), ``id``
(str, the message id: the idempotency key), ``to`` (str, E.164
with '+'), ``account`` (str), ``segments`` (int >= 1), ``price`` (float, USD per segment
the router expects from the deck), ``attempt`` (int, 1 for the first carrier tried),
``encoding`` (``GSM-7`` or ``UCS-2``), ``country`` (str, the destination's ISO region as
the router resolved it), ``ts`` (int, the router's submit time in ms since the Unix
epoch), ``sender`` (str, the request's ``from``, possibly empty) and ``ask`` (int, the
router's number for this ask of the attempt: a timed-out attempt is asked again with the
same id, and the result's echo of ``ask`` says which ask a rejection answers) and
``token`` (bytes, the router's signature of the attempt: opaque to the carrier). The
carrier echoes ``country``, ``ts``, ``sender``, ``price`` (as ``quote``) and ``token`` in
the delivery report, so that any router can check the report answers a submit of the
fleet to that carrier process (``router.engine.transports.tokens``), and write the
receipt and feed its health averages (per carrier and country, with the
submit-to-report latency) from the report alone.

Submit result (carrier -> ``<reply_to>/<host>``), ``SubmitResultBatch``
--------------------------------------------------------------
``{"carrier": str (the host id), "results": [SubmitResult, ...]}``, sent after the
carrier's submit latency. ``SubmitResult``: ``id``, ``carrier``, ``attempt``,
``accepted`` (bool), ``code`` (int or
nil: nil when accepted), ``duplicate`` (bool: this id was accepted before; acknowledged
again, never delivered twice), ``price`` (float, USD per segment the carrier bills; 0
when rejected), ``ask`` (int, echoed from the submit item). A carrier decides the submits
of one id in the order they arrive and answers a repeat of an accepted id as accepted, so
the answer to the router's last ask of an attempt is the carrier's final word on it.

Delivery report (carrier -> routers), ``DeliveryReportBatch``
-------------------------------------------------------------
``{"carrier": str (the host id), "reports": [DeliveryReport, ...]}``. ``DeliveryReport``
carries all a router needs to write the receipt with no state of its own: ``id``,
``account``, ``carrier``, ``route`` (``direct`` or ``aggregator``), ``status``
(``delivered`` or ``undelivered``), ``code`` (int or nil), ``price`` (USD per segment
billed), ``currency`` (``USD``), ``segments``, ``attempt``, ``encoding``, ``ts`` (report
time, ms since the Unix epoch), ``country``, ``submitted_ts``, ``sender``, ``quote`` and
``token`` (echoed from the submit). ``resent`` (int, 0 the first time) counts how often
the carrier published it again because no router acknowledged it. A report may never
come (lost, as on real networks); one that was published comes again until a router
acknowledges it.

Report acknowledgement (router -> carrier process), ``ReportAckBatch``
----------------------------------------------------------------------
``{"router": str (the acknowledging router's instance), "acks": [ReportAck, ...]}``;
``ReportAck``: ``id``, ``carrier``: the report of message ``id`` at ``carrier``, whose
receipt Kafka has acknowledged. An ack for a report the process does not hold (acked
already, or never sent) is ignored. Published on the host's ``dlr-ack`` topic, QoS 1.

Batching: a carrier process flushes a batch of results (per reply topic) at 256 items or
5 ms after its first item, whichever comes first (``MAX_BATCH``, ``FLUSH_INTERVAL_S``),
and its reports (all in one batch) at 256 or after 25 ms; routers batch submits per
carrier process like results.

Codes (CPaaS numbers where one fits)
------------------------------------
Submit rejections (``SubmitResult.code``; the message may be retried elsewhere):

- ``21211`` invalid destination: ``to`` is not a '+' followed by 6-15 digits;
- ``21612`` unknown destination: no prefix in the carrier's deck matches ``to``;
- ``30001`` throttled (queue overflow): the carrier's throughput cap is exceeded;
- ``30008`` unknown error: the carrier failed the submit (random, at its failure rate).

Delivery report codes (``DeliveryReport.code``, with ``status = "undelivered"``):

- ``30003`` unreachable handset; ``30005`` unknown handset;
- ``30006`` landline or unreachable carrier; ``30007`` filtered (carrier spam filter).
"""

from __future__ import annotations

from typing import Final, Generic, Literal, TypeVar

import msgspec

from router.contracts.codes import Code

HOST_TOPIC_ROOT: Final = "supernet/carriers/host"
ROUTER_TOPIC_ROOT: Final = "supernet/router"
HOST_STATUS_ALL: Final = f"{HOST_TOPIC_ROOT}/+/status"
CARRIER_STATUS_ALL: Final = f"{HOST_TOPIC_ROOT}/+/carrier/+/status"
DLR_ALL: Final = f"{HOST_TOPIC_ROOT}/+/dlr"
DIRECTORY_ALL: Final = f"{HOST_TOPIC_ROOT}/+/carriers"

MAX_BATCH: Final = 256
FLUSH_INTERVAL_S: Final = 0.005
REPORT_RESEND_S: Final = 10.0
"""A carrier process publishes an unacknowledged report again after this many seconds."""

Status = Literal["online", "offline"]
ONLINE: Final = b"online"
OFFLINE: Final = b"offline"

Route = Literal["direct", "aggregator"]
ReportStatus = Literal["delivered", "undelivered"]

# ledger reason names for submit rejections (codes: ``router.contracts.codes``)
REJECT_REASONS: Final[dict[int, str]] = {
    Code.INVALID_DESTINATION: "invalid_destination",
    Code.NO_ROUTE: "unknown_destination",
    Code.QUEUE_OVERFLOW: "throttled",
    Code.UNKNOWN_ERROR: "failed",
}


def host_submit_topic(host_id: str) -> str:
    return f"{HOST_TOPIC_ROOT}/{host_id}/submit"


def host_dlr_topic(host_id: str) -> str:
    return f"{HOST_TOPIC_ROOT}/{host_id}/dlr"


def host_dlr_ack_topic(host_id: str) -> str:
    return f"{HOST_TOPIC_ROOT}/{host_id}/dlr-ack"


def directory_topic(host_id: str) -> str:
    return f"{HOST_TOPIC_ROOT}/{host_id}/carriers"


def carrier_status_topic(host_id: str, carrier_id: str) -> str:
    return f"{HOST_TOPIC_ROOT}/{host_id}/carrier/{carrier_id}/status"


def host_status_topic(host_id: str) -> str:
    return f"{HOST_TOPIC_ROOT}/{host_id}/status"


def reply_topic(router: str) -> str:
    """A router's ``reply_to``: the carrier processes answer on ``<reply_to>/<host>``."""
    return f"{ROUTER_TOPIC_ROOT}/{router}/results"


def results_subscription(router: str) -> str:
    """The one subscription a router needs for the answers of every carrier process."""
    return f"{reply_topic(router)}/+"


def result_topic(reply_to: str, host_id: str) -> str:
    """Where carrier process ``host_id`` answers a batch that gave ``reply_to``; ValueError
    for a ``reply_to`` that is not a router's (``supernet/router/<router>/results``)."""
    parts = reply_to.split("/")
    if (
        len(parts) != 4
        or f"{parts[0]}/{parts[1]}" != ROUTER_TOPIC_ROOT
        or parts[3] != "results"
        or not parts[2]
        or any(c in parts[2] for c in "+#$")
    ):
        raise ValueError(f"reply_to {reply_to[:80]!r} is not a router's results topic")
    return f"{reply_to}/{host_id}"


def dlr_shared_subscription(group: str) -> str:
    """The one subscription a router group uses for every carrier's reports."""
    return f"$share/{group}/{DLR_ALL}"


def host_of(topic: str) -> str:
    """The host id in a ``supernet/carriers/host/<host>/...`` topic, or the last level of a
    result topic (``supernet/router/<router>/results/<host>``)."""
    parts = topic.split("/")
    if len(parts) in (5, 7) and "/".join(parts[:3]) == HOST_TOPIC_ROOT and parts[3]:
        return parts[3]
    if len(parts) == 5 and f"{parts[0]}/{parts[1]}" == ROUTER_TOPIC_ROOT and parts[4]:
        return parts[4]
    raise ValueError(f"{topic[:120]!r} is not a carrier host topic")


def carrier_of(topic: str) -> str:
    """The carrier id in a ``supernet/carriers/host/<host>/carrier/<id>/status`` topic."""
    parts = topic.split("/")
    if len(parts) != 7 or "/".join(parts[:3]) != HOST_TOPIC_ROOT or parts[4] != "carrier":
        raise ValueError(f"{topic[:120]!r} is not a carrier status topic")
    return parts[5]


class SubmitItem(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    to: str
    carrier: str = ""
    account: str = ""
    segments: int = 1
    price: float = 0.0
    attempt: int = 1
    encoding: str = "GSM-7"
    country: str = ""
    ts: int = 0
    sender: str = ""  # the request's ``from`` (sender id), passed on as given
    ask: int = 0  # the router's number for this ask; echoed in the result (0: none)
    token: bytes = b""  # the router's signature of this attempt; echoed in the report


class SubmitBatch(msgspec.Struct, frozen=True):
    carrier: str
    reply_to: str
    items: list[SubmitItem]


class SubmitResult(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    accepted: bool
    carrier: str = ""
    attempt: int = 1
    code: int | None = None
    duplicate: bool = False
    price: float = 0.0
    ask: int = 0  # echoed from the submit item


class SubmitResultBatch(msgspec.Struct, frozen=True):
    carrier: str  # the host id (each result names its carrier)
    results: list[SubmitResult]


class DeliveryReport(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    carrier: str
    route: Route
    status: ReportStatus
    ts: int
    account: str = ""
    code: int | None = None
    price: float = 0.0
    currency: str = "USD"
    segments: int = 1
    attempt: int = 1
    encoding: str = "GSM-7"
    country: str = ""
    submitted_ts: int = 0
    resent: int = 0
    sender: str = ""  # echoed from the submit
    quote: float = 0.0  # echoed from the submit's ``price``
    token: bytes = b""  # echoed from the submit


class DeliveryReportBatch(msgspec.Struct, frozen=True):
    carrier: str  # the host id (each report names its carrier)
    reports: list[DeliveryReport]


class ReportAck(msgspec.Struct, frozen=True):
    id: str
    carrier: str


class ReportAckBatch(msgspec.Struct, frozen=True):
    router: str
    acks: list[ReportAck]


class HostDirectory(msgspec.Struct, frozen=True):
    """Retained on ``supernet/carriers/host/<host>/carriers``: which carriers it hosts."""

    host: str
    carriers: list[str]


T = TypeVar("T")


class Codec(Generic[T]):
    """One msgpack Encoder and one Decoder for one payload type, built once."""

    __slots__ = ("_decoder", "_encoder", "type")

    def __init__(self, type_: type[T]) -> None:
        self.type = type_
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(type_)

    def encode(self, value: T) -> bytes:
        return self._encoder.encode(value)

    def decode(self, payload: bytes) -> T:
        """Raises msgspec.DecodeError (msgspec.ValidationError) on a malformed payload."""
        return self._decoder.decode(payload)


SUBMIT_BATCH: Final = Codec(SubmitBatch)
RESULT_BATCH: Final = Codec(SubmitResultBatch)
REPORT_BATCH: Final = Codec(DeliveryReportBatch)
DIRECTORY: Final = Codec(HostDirectory)
REPORT_ACK_BATCH: Final = Codec(ReportAckBatch)


def decode_status(payload: bytes) -> Status:
    """``online`` or ``offline``; anything else raises ValueError."""
    if payload == ONLINE:
        return "online"
    if payload == OFFLINE:
        return "offline"
    raise ValueError(f"carrier status must be 'online' or 'offline', not {payload[:32]!r}")
