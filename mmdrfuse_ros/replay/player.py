"""The player: a process of its own that publishes the bag on schedule, with ``/clock``.

Why a process: in the replay process the nodes' worker threads and executor keep the GIL busy,
and a player thread there fell seconds behind the bag's timing on two loaded cores. Its own
process keeps the timing (as ``ros2 bag play`` does); publish times are CLOCK_MONOTONIC, which
both processes share.

The images go out as the CDR bytes stored in the bag (nothing is deserialised on the way); a
reader thread decompresses ahead of the schedule. Parent and player talk over a pipe with the
message classes below: the player sends :class:`Ready` until the parent sends :class:`Go`, then
:class:`Published` batches and one :class:`Done`; :class:`Stop` ends playback early.
"""

from __future__ import annotations

import contextlib
import importlib
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mmdrfuse_ros import topics
from mmdrfuse_ros.bag import io
from mmdrfuse_ros.replay.measurements import Measurements
from mmdrfuse_ros.replay.plan import BagPlan, ReplayError, ReplayOptions
from mmdrfuse_ros.replay.signals import STOP_SIGNALS, Interrupted

_PREFETCH = 24  # messages decompressed ahead of the player
_BATCH_S = 0.1  # how often the player reports what it published
_STOP_WAIT_S = 5.0  # for the player's last report after Stop
#: gap between the end of one loop and the start of the next, so that time never runs backwards.
_LOOP_GAP_NS = 100_000_000
_TOPICS = {"thermal": topics.THERMAL_IMAGE, "rgb": topics.RGB_IMAGE,
           "camera_info": topics.RGB_CAMERA_INFO}  # fmt: skip


# ----------------------------------------------------------------------------- the protocol
@dataclass(frozen=True)
class Ready:
    """Player -> parent before playback: what the player still waits for (empty: ready)."""

    missing: tuple[str, ...]


@dataclass(frozen=True)
class Publication:
    """One message the player sent: its role, header stamp, send time, lateness, and its index
    in the playback (unique per message, across loops, whatever the stamps)."""

    role: str
    stamp: int
    t: float  # monotonic seconds
    lag_s: float  # send time - scheduled time
    index: int = -1


@dataclass(frozen=True)
class Published:
    """Player -> parent during playback: the messages sent since the last report."""

    items: tuple[Publication, ...]


@dataclass(frozen=True)
class Done:
    """Player -> parent: playback is over; ``error`` says why it ended early (a corrupt bag)."""

    error: str | None = None


@dataclass(frozen=True)
class Go:
    """Parent -> player: start playback."""


@dataclass(frozen=True)
class Stop:
    """Parent -> player: end now (before or during playback)."""


PlayerMessage = Ready | Published | Done


@dataclass(frozen=True)
class PlayerJob:
    """What the player process needs (picklable: it starts with the spawn method)."""

    bag: str
    rate: float
    loop: int
    roles: dict[str, str]  # bag topic -> role (thermal, rgb, camera_info)
    types: dict[str, str]  # role -> ROS message type
    start_ns: int
    loop_period_ns: int
    needed: dict[str, int]  # role -> readers to wait for

    @classmethod
    def of(cls, options: ReplayOptions, plan: BagPlan, needed: dict[str, int]) -> PlayerJob:
        roles = {plan.thermal_topic: "thermal", plan.rgb_topic: "rgb"}
        types = {"thermal": plan.thermal_type, "rgb": plan.rgb_type}
        if plan.info_topic:
            roles[plan.info_topic] = "camera_info"
            types["camera_info"] = io.CAMERA_INFO
        return cls(bag=str(options.bag), rate=options.rate, loop=options.loop, roles=roles,
                   types=types, start_ns=plan.start_ns,
                   loop_period_ns=loop_period_ns(plan),
                   needed=needed)  # fmt: skip


def loop_period_ns(plan: BagPlan) -> int:
    """How far each loop shifts the stamps and log times of the previous one."""
    return (plan.end_ns - plan.start_ns) + _LOOP_GAP_NS


# ----------------------------------------------------------------------------- the process
def _ros_type(msgtype: str) -> type:
    """The rclpy message class of a ROS type name such as 'sensor_msgs/msg/Image'."""
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def player_main(job: PlayerJob, conn: Any) -> None:
    """The player process: wait for readers and Go, publish the bag, report what went out.

    Ctrl-C reaches the whole process group, ``timeout`` or ``docker stop`` may SIGTERM it: the
    player ignores both and stops when the parent says Stop, so that its last report always
    arrives and an interrupted replay says what was played. When the parent dies, the next send
    fails (BrokenPipeError) and the player ends.
    """
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from rosgraph_msgs.msg import Clock

    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = Node("mmdrfuse_replay_player")
    # reliable, like `ros2 bag play`: matches best-effort and reliable readers alike
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {}
    for role, msgtype in job.types.items():
        suffix = "/compressed" if msgtype == io.COMPRESSED_IMAGE else ""
        pubs[role] = node.create_publisher(_ros_type(msgtype), _TOPICS[role] + suffix, qos)
    clock_pub = node.create_publisher(Clock, topics.CLOCK, qos)
    try:
        if _wait_for_go(job, conn, pubs):
            _Playback(job, conn, pubs, clock_pub).run()
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the parent went away or stopped us
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def _wait_for_go(job: PlayerJob, conn: Any, pubs: dict[str, Any]) -> bool:
    """Report the readers still missing until the parent says Go (True) or Stop (False)."""
    while True:
        missing = tuple(f"{n - pubs[r].get_subscription_count()} more reader(s) on "
                        f"{pubs[r].topic_name}" for r, n in job.needed.items()
                        if pubs[r].get_subscription_count() < n)  # fmt: skip
        conn.send(Ready(missing))
        if conn.poll(0.05):
            return isinstance(conn.recv(), Go)


class _Playback:
    """One playback: a reader thread fills a queue, the main thread publishes on schedule."""

    def __init__(self, job: PlayerJob, conn: Any, pubs: dict[str, Any], clock_pub: Any) -> None:
        self.job, self.conn, self.pubs, self.clock_pub = job, conn, pubs, clock_pub
        self.buffer: queue.Queue = queue.Queue(maxsize=_PREFETCH)
        self.stop = threading.Event()
        self.error: str | None = None

    def read(self) -> None:
        """Decompress ahead of the schedule; a BagError ends the bag (what came before plays)."""
        try:
            for loop in range(self.job.loop):
                with io.BagReader(self.job.bag) as reader:
                    for topic, _, log_ns, raw in reader.messages(list(self.job.roles)):
                        if self.stop.is_set():
                            return
                        self.buffer.put((loop, self.job.roles[topic], log_ns, raw))
        except Exception as exc:
            self.error = str(exc)
        finally:
            self.buffer.put(None)

    def items(self) -> Iterator[tuple[int, str, int, bytes]]:
        """(loop, role, log time, CDR) until the bag ends or the parent says Stop."""
        while not self.conn.poll():
            item = self.buffer.get()
            if item is None:
                return
            yield item
        self.conn.recv()  # Stop

    def run(self) -> None:
        reader = threading.Thread(target=self.read, name="replay_reader", daemon=True)
        reader.start()
        batch: list[Publication] = []
        try:
            self._publish_all(batch)
        except Exception as exc:  # never a silent end of the bag
            self.error = self.error or f"the player stopped: {type(exc).__name__}: {exc}"
        finally:
            self.stop.set()
            with contextlib.suppress(queue.Empty):
                while True:  # unblock the reader if it waits on a full queue
                    self.buffer.get_nowait()
            reader.join(timeout=10.0)
            self.conn.send(Published(tuple(batch)))
            self.conn.send(Done(self.error))

    def _publish_all(self, batch: list[Publication]) -> None:
        from rosgraph_msgs.msg import Clock

        job, clock = self.job, Clock()
        t0: float | None = None
        last_send = time.monotonic()
        for index, (loop, role, log_ns, raw) in enumerate(self.items()):
            offset = loop * job.loop_period_ns
            if offset:  # later loops: shift stamps so that time never runs backwards
                raw = io.with_header_stamp(raw, io.header_stamp_from_cdr(raw) + offset)
            bag_t = log_ns + offset
            if t0 is None:
                t0 = time.monotonic()
            target = t0 + (bag_t - job.start_ns) / 1e9 / job.rate
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            clock.clock.sec, clock.clock.nanosec = divmod(bag_t, 1_000_000_000)
            self.clock_pub.publish(clock)
            self.pubs[role].publish(raw)
            now = time.monotonic()
            batch.append(Publication(role, io.header_stamp_from_cdr(raw), now, now - target,
                                     index))  # fmt: skip
            if now - last_send > _BATCH_S:
                self.conn.send(Published(tuple(batch)))
                batch.clear()
                last_send = now


# ----------------------------------------------------------------------------- the parent side
class PlayerProcess:
    """The parent's side of the player process: start, wait until ready, collect."""

    def __init__(self, job: PlayerJob) -> None:
        import multiprocessing

        self.job = job
        ctx = multiprocessing.get_context("spawn")  # no fork of a process running DDS threads
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=player_main, args=(job, child),
                                   name="mmdrfuse_replay_player", daemon=True)  # fmt: skip
        self.process.start()
        child.close()
        self._missing: tuple[str, ...] = ("the player process to start",)
        self.error: str | None = None

    def poll_ready(self) -> list[str]:
        """What the player still waits for (empty: ready)."""
        while self.conn.poll():
            message = self.conn.recv()
            if isinstance(message, Ready):
                self._missing = message.missing
        if not self.process.is_alive():
            raise ReplayError(f"the player process exited (code {self.process.exitcode})")
        return list(self._missing)

    def play(self, meas: Measurements, progress: Callable[[int], Any]) -> None:
        """Start playback and record what the player reports until it is Done.

        A stop signal (Interrupted, or KeyboardInterrupt where the replay's handlers are not
        installed) stops the player, records what it sent until then, and raises Interrupted;
        ``error`` is what ended the bag early.
        """
        self.conn.send(Go())
        meas.t0 = time.monotonic()
        try:
            self._record(self._messages(), meas, progress)
        except (Interrupted, KeyboardInterrupt) as exc:
            self.stop()
            with contextlib.suppress(Exception, Interrupted, KeyboardInterrupt):
                self._record(self._messages(timeout_s=_STOP_WAIT_S), meas, progress)
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            raise Interrupted(signum, "playback") from None

    def _record(self, messages: Iterator[PlayerMessage], meas: Measurements,
                progress: Callable[[int], Any]) -> None:  # fmt: skip
        for message in messages:
            if isinstance(message, Done):
                self.error = message.error
                return
            if isinstance(message, Published):
                for p in message.items:
                    meas.add_published(p.role, p.stamp, p.t, p.lag_s, p.index)
                progress(len(message.items))

    def _messages(self, timeout_s: float | None = None) -> Iterator[PlayerMessage]:
        """The player's messages; ends after ``timeout_s`` without one (None: never)."""
        last = time.monotonic()
        while timeout_s is None or time.monotonic() - last < timeout_s:
            if self.conn.poll(0.5):
                last = time.monotonic()
                yield self.conn.recv()
            elif not self.process.is_alive():
                raise ReplayError("the player process died during playback")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send(Stop())

    def close(self) -> None:
        self.stop()
        self.process.join(timeout=10.0)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5.0)
