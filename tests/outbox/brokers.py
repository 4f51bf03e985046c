"""The real brokers the outbox tests publish to, and reading back what arrived.

RabbitMQ is the machine's (127.0.0.1:5672, guest/guest; `rabbitmqctl` stops and starts its
app); each test uses an exchange and a durable queue of its own. NATS and Redis are
private servers of the test session, on free ports, so that a test can stop and restart
them. The webhook receiver is an HTTP server in a thread of the test process.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import aio_pika
import nats
import redis

from outbox import Message
from outbox.publishers.nats import message_from_nats
from outbox.publishers.rabbitmq import message_from_delivery
from outbox.publishers.redis import message_from_entry

RABBITMQ_URL: Final = "amqp://guest:guest@127.0.0.1:5672/"
SECRET: Final = "whsec_" + "c2VjcmV0LWZvci10aGUtb3V0Ym94LXRlc3Rz"  # base64 of a test secret


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)  # the poll interval of a condition, with a deadline


@dataclasses.dataclass
class Server:
    """A broker process of this test session: stopped and started again on the same port."""

    name: str
    command: Callable[[int, Path], list[str]]
    port: int = dataclasses.field(default_factory=free_port)
    directory: Path = dataclasses.field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="outbox-broker-"))
    )
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.directory / f"{self.name}.log", "ab")  # noqa: SIM115 - the child's
        with log:
            self.process = subprocess.Popen(
                self.command(self.port, self.directory), stdout=log, stderr=subprocess.STDOUT
            )
        wait(lambda: answers(self.port), 20, f"{self.name} listens on {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None
        wait(lambda: not answers(self.port), 10, f"{self.name} stops listening")

    def remove(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=20)
        shutil.rmtree(self.directory, ignore_errors=True)


def nats_server() -> Server:
    def command(port: int, directory: Path) -> list[str]:
        return ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(directory)]

    return Server("nats-server", command)


def redis_server() -> Server:
    def command(port: int, directory: Path) -> list[str]:
        # appendfsync always: an XADD Redis answered survives a restart of Redis.
        return [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
        ]  # fmt: skip

    return Server("redis-server", command)


# RabbitMQ.


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def rabbitmq_queue(exchange: str, queue: str, binding: str = "#") -> None:
    """Declares a durable topic exchange and a durable queue bound to it."""
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        ex = await channel.declare_exchange(exchange, "topic", durable=True)
        q = await channel.declare_queue(queue, durable=True)
        await q.bind(ex, binding)


async def rabbitmq_messages(queue: str) -> list[Message]:
    """Returns every message in the queue, in queue order (acked: the queue is drained)."""
    messages = []
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, durable=True)
        while (delivery := await q.get(fail=False, no_ack=True)) is not None:
            messages.append(message_from_delivery(delivery))
    return messages


async def rabbitmq_remove(exchange: str, *queues: str) -> None:
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


# NATS JetStream.


async def nats_stream(url: str, stream: str, subjects: list[str], **config: Any) -> None:
    client = await nats.connect(url)
    try:
        await client.jetstream().add_stream(name=stream, subjects=subjects, **config)
    finally:
        await client.close()


async def nats_messages(url: str, stream: str) -> list[Message]:
    """Returns every message stored in a JetStream stream, in stream order."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        last = (await js.stream_info(stream)).state.last_seq
        messages = []
        for seq in range(1, last + 1):
            stored = await js.get_msg(stream, seq)
            messages.append(
                message_from_nats(_Stored(stored.data or b"", dict(stored.headers or {})))
            )
        return messages
    finally:
        await client.close()


@dataclasses.dataclass
class _Stored:
    data: bytes
    headers: dict[str, str]


# Redis.


def redis_messages(url: str, key: str) -> list[Message]:
    client = redis.Redis.from_url(url)
    try:
        return [message_from_entry(fields) for _, fields in client.xrange(key)]
    finally:
        client.close()


# Webhooks.


@dataclasses.dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def message(self) -> Message:
        return Message.from_structured(self.body)


class WebhookReceiver:
    """An HTTP server in a thread that records each POST and answers ``respond(body)``."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.respond: Callable[[bytes], int] = lambda body: 200
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the publisher reuses connections
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                # A publisher killed mid-request leaves a truncated body: not a delivery.
                status = receiver.respond(body) if len(body) == length else 400
                if 200 <= status < 300:
                    with receiver._lock:
                        receiver.received.append(Received(dict(self.headers), body))
                answer = json.dumps({"status": status}).encode()
                self.send_response(status)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Listener(http.server.ThreadingHTTPServer):
            request_queue_size = 128  # the publisher opens connections in bursts
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a killed publisher's connection resets: expected here

        self.server = Listener(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def messages(self) -> list[Message]:
        with self._lock:
            return [r.message for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
