"""Synchronisation of N image topics on their header stamps: approximate-time, or latest.

Two policies (the fusion node's ``sync_policy``):

* ``approximate`` (default): each set is the nearest match within ``slop``, each message is used
  once. A pair is complete when its later partner arrives, so a set waits for the slower camera.
* ``latest`` (:class:`LatestPolicy`): each message of the primary input (the RGB camera, whose
  header the fused image carries) is paired at once with the newest message of every other
  input within ``slop``; a thermal frame may serve several RGB frames. Nothing waits for a
  partner that is still on its way, at the price of pairing with the previous thermal frame
  when the next one is late.

Approximate time: where ``message_filters`` is installed (any ROS 2 distro) we use its
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
    "LatestPolicy",
    "SyncedSubscriptions",
    "message_filters_available",
    "validate_sync_params",
]


class _QueuedPolicy:
    """Per-input queues keyed by stamp, shared by both policies; ``_add_locked`` differs."""

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

    def _enqueue(self, index: int, stamp: int, msg: Any) -> bool:
        """Queue ``msg``, evicting the oldest beyond ``queue_size``; False when it was itself
        older than a full queue (evicted at once, as message_filters does)."""
        own = self._queues[index]
        self.received[index] += 1
        if stamp in own:
            self.replaced[index] += 1
        own[stamp] = msg
        while len(own) > self.queue_size:
            del own[min(own)]
            self.evicted[index] += 1
        return stamp in own

    def _add_locked(self, index: int, stamp: int, msg: Any) -> tuple[Any, ...] | None:
        raise NotImplementedError


class ApproximateTimePolicy(_QueuedPolicy):
    """Our implementation of the approximate-time policy (see the module docstring); ROS-free.

    ``add(index, stamp_ns, msg)`` returns the matched set (a tuple ordered by input index) or
    None, and calls each registered callback with the set's messages, outside the lock.
    """

    def _add_locked(self, index: int, stamp: int, msg: Any) -> tuple[Any, ...] | None:
        if not self._enqueue(index, stamp, msg):
            return None

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


class LatestPolicy(_QueuedPolicy):
    """Pair each primary message at once with the newest message of every other input within
    ``slop``; ROS-free, the same interface as :class:`ApproximateTimePolicy`.

    * every input keeps at most ``queue_size`` messages by stamp (a same-stamp message replaces
      the queued one; the oldest is evicted when full);
    * a primary message is emitted at once when each other input holds a stamp strictly less than
      ``slop`` away: with the newest such stamp of each (which stays queued for the next primary
      message); otherwise it waits;
    * a message of another input emits the newest waiting primary message it completes; primary
      messages older than an emitted one are dropped (counted as evicted): they are stale.
    """

    def __init__(self, n_inputs: int, queue_size: int, slop: float, primary: int = -1):
        super().__init__(n_inputs, queue_size, slop)
        self.primary = primary % n_inputs

    def _add_locked(self, index: int, stamp: int, msg: Any) -> tuple[Any, ...] | None:
        if not self._enqueue(index, stamp, msg):
            return None
        waiting = [stamp] if index == self.primary else sorted(self._queues[self.primary])[::-1]
        for primary_stamp in waiting:  # newest first
            partners = self._partners(primary_stamp)
            if partners is not None:
                return self._emit(primary_stamp, partners)
        return None

    def _partners(self, primary_stamp: int) -> dict[int, int] | None:
        """The newest stamp within slop on every other input, or None."""
        chosen = {}
        for i, queue in enumerate(self._queues):
            if i == self.primary:
                continue
            near = [t for t in queue if abs(t - primary_stamp) < self.slop_ns]
            if not near:
                return None
            chosen[i] = max(near)
        return chosen

    def _emit(self, primary_stamp: int, partners: dict[int, int]) -> tuple[Any, ...]:
        queue = self._queues[self.primary]
        message = queue.pop(primary_stamp)
        for older in [t for t in queue if t < primary_stamp]:
            del queue[older]
            self.evicted[self.primary] += 1
        self.matched += 1
        return tuple(
            message if i == self.primary else self._queues[i][partners[i]]
            for i in range(self.n_inputs)
        )


def message_filters_available() -> bool:
    """True where ``message_filters`` (ROS 2) can be imported."""
    try:
        import message_filters  # noqa: F401
    except ImportError:
        return False
    return True


class SyncedSubscriptions:
    """N subscriptions whose synchronised sets go to ``callback(*msgs)``.

    ``policy``: ``approximate`` (message_filters where installed and ``use_message_filters`` is
    not False, else :class:`ApproximateTimePolicy`) or ``latest`` (:class:`LatestPolicy`, the
    last input being the primary one). ``qos``: one profile for all inputs, or one per input;
    ``qos_overriding_options``: one rclpy ``QoSOverridingOptions`` per input, or None.
    ``on_receive(index, msg)``, if given, sees every message before synchronisation (for rates
    and counters). ``implementation`` says which code runs. The callback runs on the executor
    thread that delivered the completing message: keep it short (hand the set to a worker).
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
        policy: str = "approximate",
        qos_overriding_options: Sequence[Any] | None = None,
    ):
        validate_sync_params(queue_size, slop, policy)
        self._node = node
        self.policy_name = policy
        self.policy: ApproximateTimePolicy | LatestPolicy | None = None
        self._subscriptions: list[Any] = []
        profiles = list(qos) if isinstance(qos, list | tuple) else [qos] * len(inputs)
        options = list(qos_overriding_options or [None] * len(inputs))
        kwargs = [
            {"qos_profile": q, "callback_group": callback_group,
             **({"qos_overriding_options": o} if o is not None else {})}
            for q, o in zip(profiles, options, strict=True)
        ]  # fmt: skip
        if use_message_filters is None:
            use_message_filters = message_filters_available()
        if policy == "approximate" and use_message_filters:
            self._subscribe_message_filters(inputs, kwargs, queue_size, slop, callback, on_receive)
            return
        self.implementation = "mmdrfuse_ros"
        if policy == "latest":
            self.policy = LatestPolicy(len(inputs), queue_size, slop)
        else:
            self.policy = ApproximateTimePolicy(len(inputs), queue_size, slop)
        self.policy.register_callback(callback)
        for index, ((msg_type, topic), kw) in enumerate(zip(inputs, kwargs, strict=True)):

            def receive(msg: Any, i: int = index) -> None:
                if on_receive is not None:
                    on_receive(i, msg)
                assert self.policy is not None
                self.policy.add(i, stamp_to_ns(msg.header.stamp), msg)

            qos_profile = kw.pop("qos_profile")
            self._subscriptions.append(
                node.create_subscription(msg_type, topic, receive, qos_profile, **kw)
            )

    def _subscribe_message_filters(
        self, inputs: Sequence[tuple[type, str]], kwargs: list[dict[str, Any]], queue_size: int,
        slop: float, callback: Callable[..., None],
        on_receive: Callable[[int, Any], None] | None,
    ) -> None:
        import message_filters

        self.implementation = "message_filters"
        filters = []
        for index, ((msg_type, topic), kw) in enumerate(zip(inputs, kwargs, strict=True)):
            # message_filters.Subscriber passes its keyword arguments to create_subscription
            sub = message_filters.Subscriber(self._node, msg_type, topic, **kw)
            if on_receive is not None:  # registered first, so it runs before the sync
                sub.registerCallback(lambda msg, i=index: on_receive(i, msg))
            filters.append(sub)
            self._subscriptions.append(sub.sub)
        self._sync = message_filters.ApproximateTimeSynchronizer(filters, queue_size, slop)
        self._sync.registerCallback(callback)
        self._filters = filters  # keep them alive

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
