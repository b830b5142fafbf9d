"""Per-partition in-order acknowledgement.

Work on a partition finishes out of order (different sessions run concurrently), but Faust must
only ever be told about offsets whose every predecessor is done: it commits the first consecutive
run of acked offsets, and its guard against gaps is skipped on a partition with no committed
offset yet. ``PartitionAcks`` holds later completions until all earlier offsets are done, then
acks them in offset order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable


class PartitionAcks:
    def __init__(self) -> None:
        self._pending: OrderedDict[int, tuple[bool, Callable[[], object]]] = OrderedDict()
        self.acked_through: int = -1

    def __len__(self) -> int:
        return len(self._pending)

    def track(self, offset: int, ack: Callable[[], object]) -> None:
        """Register an offset; offsets arrive in increasing order from the consumer."""
        self._pending[offset] = (False, ack)

    def complete(self, offset: int) -> int:
        """Mark ``offset`` done; ack the done prefix. Returns how many offsets were acked."""
        entry = self._pending.get(offset)
        if entry is None:
            return 0
        self._pending[offset] = (True, entry[1])
        acked = 0
        while self._pending:
            first, (done, ack) = next(iter(self._pending.items()))
            if not done:
                break
            self._pending.popitem(last=False)
            ack()
            self.acked_through = first
            acked += 1
        return acked
