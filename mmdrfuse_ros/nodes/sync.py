"""Approximate-time synchronisation of N image topics on their header stamps.

Where ``message_filters`` is installed (any ROS 2 distro) we use its
``ApproximateTimeSynchronizer``; where it is not (the PyPI stack), :class:`ApproximateTimePolicy`
implements the same policy with the same parameters, so a node behaves alike in both places:

* each input keeps at most ``queue_size`` messages, keyed by stamp: a message whose stamp is
  already queued on that input replaces it, and the oldest stamp is evicted when the queue is
  full;
* when a message arrives, every other input is searched for stamps within ``slop`` of it,
  nearest first; the first combination whose stamps span strictly less than ``slop`` is emitted
  and its messages leave the queues, so each message is used at most once and no set spans
  ``slop`` or more;
* messages that never match stay queued until evicted (older ones are not discarded when a newer
  set matches).

This is the policy of message_filters' Python ``ApproximateTimeSynchronizer`` (the one an rclpy
node gets), not the C++ ``ApproximateTime`` policy with its pivot search. Our implementation also
counts evictions and replacements, which message_filters does not expose.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

from mmdrfuse_ros.settings.fusion import validate_sync_params
from mmdrfuse_ros.stamps import stamp_to_ns

__all__ = [
    "ApproximateTimePolicy",
    "SyncedSubscriptions",
    "message_filters_available",
    "validate_sync_params",
]


class ApproximateTimePolicy:
    """Our implementation of the approximate-time policy (see the module docstring); ROS-free.

    ``add(index, stamp_ns, msg)`` returns the matched set (a tuple ordered by input index) or
    None, and calls each registered callback with the set's messages, outside the lock.
    """

    def __init__(self, n_inputs: int, queue_size: int, slop: float):
        if n_inputs < 2:
            raise ValueError(f"synchronising needs at least 2 inputs, got {n_inputs}")
        validate_sync_params(queue_size, slop)
        self.n_inputs = n_inputs
        self.queue_size = int(queue_size)
        # message_filters compares rclpy Durations built with Duration(seconds=slop), which
        # truncates to whole nanoseconds; do the same so borderline stamps agree.
        self.slop_ns = int(slop * 1e9)
        self._queues: list[dict[int, Any]] = [{} for _ in range(n_inputs)]
        self._callbacks: list[Callable[..., None]] = []
        self._lock = threading.Lock()
        self.received = [0] * n_inputs
        self.evicted = [0] * n_inputs  # pushed out of a full queue without a match
        self.replaced = [0] * n_inputs  # a later message with the same stamp took its place
        self.matched = 0

    def register_callback(self, callback: Callable[..., None]) -> None:
        self._callbacks.append(callback)

    def queued(self) -> list[int]:
        """How many messages wait on each input."""
        with self._lock:
            return [len(q) for q in self._queues]

    def clear(self) -> None:
        """Forget every queued message (e.g. on deactivate, or when sim time jumps back)."""
        with self._lock:
            for queue in self._queues:
                queue.clear()

    def add(self, index: int, stamp_ns: int, msg: Any) -> tuple[Any, ...] | None:
        with self._lock:
            matched = self._add_locked(index, int(stamp_ns), msg)
        if matched is not None:
            for callback in self._callbacks:
                callback(*matched)
        return matched

    def _add_locked(self, index: int, stamp: int, msg: Any) -> tuple[Any, ...] | None:
        own = self._queues[index]
        self.received[index] += 1
        if stamp in own:
            self.replaced[index] += 1
        own[stamp] = msg
        while len(own) > self.queue_size:
            del own[min(own)]
            self.evicted[index] += 1
        if stamp not in own:
            return None  # arrived older than a full queue: evicted at once, as message_filters

        # nearest-first candidate stamps on every other input, within slop of the new stamp
        others = [i for i in range(self.n_inputs) if i != index]
        candidates: list[list[int]] = []
        for i in others:
            near = [t for t in self._queues[i] if abs(t - stamp) <= self.slop_ns]
            if not near:
                return None  # some input has nothing close enough yet
            near.sort(key=lambda t: abs(t - stamp))  # stable: ties keep arrival order
            candidates.append(near)

        for combo in itertools.product(*candidates):
            stamps = dict(zip(others, combo, strict=True))
            stamps[index] = stamp
            if max(stamps.values()) - min(stamps.values()) < self.slop_ns:
                chosen = tuple(self._queues[i].pop(stamps[i]) for i in range(self.n_inputs))
                self.matched += 1
                return chosen
        return None


def message_filters_available() -> bool:
    """True where ``message_filters`` (ROS 2) can be imported."""
    try:
        import message_filters  # noqa: F401
    except ImportError:
        return False
    return True


class SyncedSubscriptions:
    """N subscriptions whose approximately synchronised sets go to ``callback(*msgs)``.

    ``on_receive(index, msg)``, if given, sees every message before synchronisation (for rates
    and counters). ``use_message_filters=None`` picks message_filters where it is installed;
    ``implementation`` says which one runs. The callback runs on the executor thread that
    delivered the completing message: keep it short (hand the set to a worker).
    """

    def __init__(
        self,
        node: Any,
        inputs: Sequence[tuple[type, str]],
        qos: Any,
        queue_size: int,
        slop: float,
        callback: Callable[..., None],
        on_receive: Callable[[int, Any], None] | None = None,
        use_message_filters: bool | None = None,
        callback_group: Any = None,
    ):
        validate_sync_params(queue_size, slop)
        self._node = node
        self.policy: ApproximateTimePolicy | None = None
        self._subscriptions: list[Any] = []
        if use_message_filters is None:
            use_message_filters = message_filters_available()
        if use_message_filters:
            import message_filters

            self.implementation = "message_filters"
            filters = []
            for index, (msg_type, topic) in enumerate(inputs):
                sub = message_filters.Subscriber(
                    node, msg_type, topic, qos_profile=qos, callback_group=callback_group
                )
                if on_receive is not None:  # registered first, so it runs before the sync
                    sub.registerCallback(lambda msg, i=index: on_receive(i, msg))
                filters.append(sub)
                self._subscriptions.append(sub.sub)
            self._sync = message_filters.ApproximateTimeSynchronizer(filters, queue_size, slop)
            self._sync.registerCallback(callback)
            self._filters = filters  # keep them alive
        else:
            self.implementation = "mmdrfuse_ros"
            self.policy = ApproximateTimePolicy(len(inputs), queue_size, slop)
            self.policy.register_callback(callback)
            for index, (msg_type, topic) in enumerate(inputs):

                def receive(msg: Any, i: int = index) -> None:
                    if on_receive is not None:
                        on_receive(i, msg)
                    assert self.policy is not None
                    self.policy.add(i, stamp_to_ns(msg.header.stamp), msg)

                self._subscriptions.append(
                    node.create_subscription(
                        msg_type, topic, receive, qos, callback_group=callback_group
                    )
                )

    def clear(self) -> None:
        """Forget queued messages (after the clock jumped back, e.g. a bag loop)."""
        if self.policy is not None:
            self.policy.clear()
        else:  # message_filters keeps one {stamp: msg} dict per input, guarded by its lock
            with self._sync.lock:
                for queue in self._sync.queues:
                    queue.clear()

    @property
    def topics(self) -> list[str]:
        """Resolved topic names (after namespaces and remaps)."""
        return [sub.topic_name for sub in self._subscriptions]

    def destroy(self) -> None:
        for sub in self._subscriptions:
            self._node.destroy_subscription(sub)
        self._subscriptions.clear()
