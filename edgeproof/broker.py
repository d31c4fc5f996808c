"""An embedded MQTT broker (amqtt) for the demo, so a fresh machine needs no server.

Production points the agent and the ingest at a real broker (Mosquitto, EMQX); the tests use a
real Mosquitto. amqtt runs here on its own event loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings

from amqtt.broker import Broker


class EmbeddedBroker:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._broker: Broker | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="embedded-broker", daemon=True)

    def start(self) -> None:
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        logging.getLogger("amqtt").setLevel(logging.ERROR)
        self._thread.start()

        async def boot() -> Broker:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                broker = Broker(config, loop=self._loop)
            await broker.start()
            return broker

        self._broker = asyncio.run_coroutine_threadsafe(boot(), self._loop).result(timeout=15)

    def stop(self) -> None:
        if self._broker is not None:
            asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(timeout=15)
            self._broker = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
