"""The transactional outbox: relays that publish committed events to brokers, and an inbox.

See `outbox.relay` for the delivery guarantees, `outbox.message` for the envelope, and
`outbox.publishers` for the broker adapters.
"""

from outbox.enqueue import OutboxMessage, enqueue
from outbox.errors import PermanentPublishError, PublishError, TransientPublishError
from outbox.message import Mapper, Message, message_from_event
from outbox.publisher import Publisher, RecordingPublisher
from outbox.relay import Relay, RelayGroup

__all__ = [
    "Mapper",
    "Message",
    "OutboxMessage",
    "PermanentPublishError",
    "PublishError",
    "Publisher",
    "RecordingPublisher",
    "Relay",
    "RelayGroup",
    "TransientPublishError",
    "enqueue",
    "message_from_event",
]
