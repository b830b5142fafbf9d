"""A Faust App whose Kafka consumer takes our fetch wait.

Faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500``. Brokers that do not answer a
waiting fetch early when data arrives (Tansu, the embedded dev broker, measured: a hop costs
about half the max wait) then add up to 1.5 s per stage hop. This subclass passes
``settings.kafka.fetch_max_wait_ms`` through; nothing else about Faust changes.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


def _consumer_thread_class(fetch_max_wait_ms: int) -> type[Any]:
    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    return ConsumerThread


class TunedApp(faust.App):
    """``faust.App`` plus ``fetch_max_wait_ms``."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 500, **kwargs: Any) -> None:
        self._fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        thread_cls = _consumer_thread_class(self._fetch_max_wait_ms)

        class Consumer(faust_aiokafka.Consumer):
            def _new_consumer_thread(self) -> Any:
                return thread_cls(self, loop=self.loop, beacon=self.beacon)

        class Transport(faust_aiokafka.Transport):
            pass

        Transport.Consumer = Consumer
        return Transport(self.conf.broker_consumer, self)
