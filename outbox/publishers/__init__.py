"""The broker adapters: one module per broker, each importing its client library only.

Import the one you use (``from outbox.publishers.rabbitmq import RabbitMQPublisher``);
each needs its extra (``eventkeeper[rabbitmq]``, ``[nats]``, ``[redis]``, ``[webhooks]``),
and none is imported by ``import outbox``.
"""

__all__: list[str] = []
