"""``WorkerNode``: the lifecycle, parameter and worker machinery of both nodes.

A worker node keeps latency bounded: subscription callbacks ``_offer`` the newest input to a
one-slot mailbox (:class:`LatestSlot`) and return; a worker thread takes it and calls
``_process``. An input replaced before the worker took it is dropped and counted as ``stale``,
so a slow frame never queues up latency.

The node's engine or detector (the "built" object) is made on activate from the parameter
values. A change of a ``live`` parameter is validated by the settings layer, then left in a
pending slot that the worker applies before its next input; when that rebuild fails, the
previous object stays and the failure is reported. Other parameters apply at the next
configure/activate.

Nothing a parameter value does can kill the node: any exception while checking or building
from it is a refused change (with its type and message as the reason), a failed activation or a
failed rebuild (the previous object kept), each reported on ``/diagnostics``.

One diagnostics policy for both nodes: a failed build or rebuild is ERROR; an inactive node OK
("<state>: not <activity>"); WARN while an input has been silent for ``input_timeout`` seconds
(naming its topic), for a node-specific warning, or for bad inputs dropped in the last
:attr:`WorkerNode.RECENT_WINDOW_S` seconds; otherwise OK with the output rate. The lifecycle
state is rclpy's own state machine.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.subscription import Subscription

from mmdrfuse_ros.nodes.diagnostics import (
    ERROR,
    OK,
    WARN,
    Counters,
    DiagnosticReport,
    DiagnosticsPublisher,
    LatencyStats,
    RateMeter,
)
from mmdrfuse_ros.nodes.params import all_declared, declare_all, read_values
from mmdrfuse_ros.settings.spec import INPUT_TIMEOUT, Param, by_name, format_table
from mmdrfuse_ros.stamps import stamp_to_ns


class LatestSlot:
    """A one-item mailbox: ``put`` replaces an item not yet taken and says so."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False

    def put(self, item: Any) -> bool:
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
        return replaced

    def take(self, timeout: float) -> Any:
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> Any:
        """Wake the worker for good; returns (and discards) an item never taken."""
        with self._cond:
            self._closed = True
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def reopen(self) -> None:
        with self._cond:
            self._closed = False
            self._item = None


def describe_error(exc: BaseException) -> str:
    """An exception as a one-line reason: our ValueError/RuntimeError messages as they are,
    anything else (a bug, or a library's surprise) with its type."""
    if isinstance(exc, ValueError) or type(exc) is RuntimeError:
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


class WorkerNode(LifecycleNode):
    """Base of the fusion and detector nodes.

    A subclass sets the class attributes below and implements ``_check``, ``_build``,
    ``_describe``, ``_open_outputs`` (on configure, into ``self._outputs``), ``_open_inputs``
    (on activate, into ``self._inputs``) and ``_process``; optionally ``_identity`` (extra
    stats), ``_warning`` (a node-specific WARN condition) and ``_input_topics`` (which rate
    meter counts which input topic, for the silent-input warning). Attributes its callbacks use
    must exist before ``WorkerNode.__init__`` runs, since that may configure and activate it.
    """

    PARAMS: tuple[Param, ...] = ()
    TASK = ""  # diagnostics task, and "invalid <TASK> parameters"
    BUILT = ""  # what is built from the live parameters, in logs: "engine", "detector"
    ACTIVITY = ""  # what an active node does, in diagnostics: "fusing", "detecting"
    ITEM = ""  # one input, in logs and diagnostics: "frame", "image"
    COUNTERS: tuple[str, ...] = ()
    DROP_CAUSES: tuple[str, ...] = ()  # the keys of the dropped_<cause> counters
    RATES: tuple[str, ...] = ()
    OUTPUT_RATE = ""  # the rate reported in the diagnostics message
    RECENT_WINDOW_S = 10.0  # bad inputs dropped this recently make the node WARN

    def _publisher(self, msg_type: type, topic: str, values: Mapping[str, Any]) -> Any:
        """A lifecycle publisher with the output QoS parameters and ``qos_overrides.*``; a fresh
        profile per entity, because rclpy writes the overrides into the one it is given."""
        from mmdrfuse_ros.nodes.qos import make_qos, overriding_options

        qos = make_qos(values["output_reliability"], values["output_depth"])
        options = overriding_options(self, "publisher", topic)
        return self.create_lifecycle_publisher(msg_type, topic, qos,
                                               qos_overriding_options=options)  # fmt: skip
    def __init__(self, node_name: str, **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        self._specs = by_name(self.PARAMS)
        self.counters = Counters((*self.COUNTERS, *(f"dropped_{c}" for c in self.DROP_CAUSES)))
        self.rates = {name: RateMeter() for name in self.RATES}
        self.latency_receive = LatencyStats()
        self.latency_stamp = LatencyStats()
        self._recent_drops = {c: RateMeter(self.RECENT_WINDOW_S) for c in self.DROP_CAUSES
                              if c != "stale"}  # fmt: skip
        self._active_since: float | None = None  # monotonic time of the last activation
        self._built: Any = None
        self._build_error = ""
        self._lock = threading.Lock()  # guards _pending; the worker takes it before each input
        self._pending: dict[str, Any] | None = None  # parameter values to rebuild from
        self._slot = LatestSlot()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._inputs: dict[str, Any] = {}  # subscriptions (or objects with destroy()), by role
        self._outputs: dict[str, Any] = {}  # lifecycle publishers, by role
        self._log_times: dict[str, float] = {}
        self._diagnostics: DiagnosticsPublisher | None = None

        self.add_on_set_parameters_callback(self._on_set_parameters)
        try:
            declare_all(self, self.PARAMS)  # rclpy refuses out-of-range values here
            if reason := self._safe_check(self.parameter_values(), None):
                raise ValueError(f"invalid {self.TASK} parameters: {reason}")
        except Exception:
            LifecycleNode.destroy_node(self)  # leave nothing behind in the caller's context
            raise
        self._diagnostics = DiagnosticsPublisher(self, self.TASK, self._collect_diagnostics)
        if self.get_parameter("autostart").value:
            self.start()

    # ------------------------------------------------------------------ subclass interface
    def _check(self, values: Mapping[str, Any], changed: Collection[str] | None) -> str | None:
        """Why these values are refused, or None. ``changed``: the parameters being set, or
        None to check them all (at start and on configure)."""
        raise NotImplementedError

    def _build(self, values: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def _describe(self, built: Any) -> str:
        raise NotImplementedError

    def _open_outputs(self, values: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def _open_inputs(self, values: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def _process(self, item: Any, built: Any) -> None:
        raise NotImplementedError

    def _identity(self) -> dict[str, Any]:
        """Stats reported before the counters (backend, device...)."""
        return {}

    def _warning(self, values: Mapping[str, Any]) -> str | None:
        """A node-specific reason to report WARN while active, or None."""
        return None

    def _input_topics(self) -> dict[str, str]:
        """``{rate name: topic}`` of the inputs that must not fall silent (while active)."""
        return {}

    # ------------------------------------------------------------------ public helpers
    def start(self) -> bool:
        """Configure (if needed) and activate; True when the node ends up active."""
        if self.lifecycle_state == "unconfigured":
            self.trigger_configure()
        if self.lifecycle_state == "inactive":
            self.trigger_activate()
        return self.lifecycle_state == "active"

    @property
    def lifecycle_state(self) -> str:
        """rclpy's state label: 'unconfigured', 'inactive', 'active' or 'finalized' (or a
        transition's label, such as 'activating', while one runs)."""
        return self._state_machine.current_state[1]

    def parameter_values(self) -> dict[str, Any]:
        return read_values(self, self.PARAMS)

    def stats(self) -> dict[str, Any]:
        """Counters, rates (Hz) and latency percentiles (ms): what /diagnostics reports."""
        values: dict[str, Any] = {"state": self.lifecycle_state, **self._identity()}
        values.update(self.counters.snapshot())
        for name, meter in self.rates.items():
            values[f"{name}_hz"] = meter.rate()
        values.update(self.latency_receive.summary("latency_receive_to_publish"))
        values.update(self.latency_stamp.summary("latency_stamp_to_publish"))
        for name, silent in self._silences().items():
            values[f"{name}_silent_s"] = silent
        values["bad_recent"] = sum(m.count() for m in self._recent_drops.values())
        return values

    def _silences(self) -> dict[str, float]:
        """Seconds since each watched input's last message (or since activation), while active."""
        since = self._active_since
        if since is None or self.lifecycle_state != "active":
            return {}
        now = time.monotonic()
        out = {}
        for name in self._input_topics():
            last = self.rates[name].last if name in self.rates else None
            out[name] = now - max(since, last if last is not None else since)
        return out

    # ------------------------------------------------------------------ parameters
    def _safe_check(self, values: Mapping[str, Any], changed: Collection[str] | None
                    ) -> str | None:
        """``_check``, with any exception it raises (a model that breaks its loader) turned
        into the reason."""
        try:
            return self._check(values, changed)
        except Exception as exc:
            return describe_error(exc)

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        try:
            return self._set_parameters(params)
        except Exception as exc:  # raised out of here, it would kill the parameter service
            self.get_logger().error(f"parameter change refused: {describe_error(exc)}")
            return SetParametersResult(successful=False, reason=describe_error(exc))

    def _set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in params if p.name in self._specs}
        if not changes or not all_declared(self, self.PARAMS):
            return SetParametersResult(successful=True)  # declaring: checked as a whole after
        values = {**self.parameter_values(), **changes}
        live = sorted(name for name in changes if self._specs[name].live)
        if reason := self._safe_check(values, set(changes)):
            return SetParametersResult(successful=False, reason=reason)
        active = self.lifecycle_state == "active"
        later = sorted(set(changes) - set(live))
        if later and active:
            self.get_logger().info(f"{later} will apply at the next activation")
        if live:
            with self._lock:
                self._pending = values  # the worker rebuilds before its next input
            if active:
                self.get_logger().info(
                    f"{self.BUILT} parameters changed ({live}): rebuilding the {self.BUILT}"
                )
        return SetParametersResult(successful=True)

    def _apply_pending(self) -> None:
        with self._lock:
            values, self._pending = self._pending, None
        if values is None:
            return
        try:
            built = self._build(values)
        except Exception as exc:
            self._build_error = (f"{self.BUILT} rebuild failed, keeping the previous one: "
                                 f"{describe_error(exc)}")  # fmt: skip
            self.get_logger().error(self._build_error)
            return
        self._build_error = ""
        old, self._built = self._built, built
        self._discard(old)
        self.get_logger().info(f"{self.BUILT} rebuilt: {self._describe(built)}")

    @staticmethod
    def _discard(built: Any) -> None:
        close = getattr(built, "close", None)
        if close is not None:
            close()  # an engine frees its model (and CUDA memory)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = self.parameter_values()
        if reason := self._safe_check(values, None):
            self.get_logger().error(f"cannot configure: {reason}")
            return TransitionCallbackReturn.FAILURE
        try:
            self._open_outputs(values)
        except Exception as exc:
            self._release_configured()
            self.get_logger().error(f"cannot configure: {describe_error(exc)}")
            return TransitionCallbackReturn.FAILURE
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            self._pending = None  # built from the current values just below
        values = self.parameter_values()
        try:
            self._built = self._build(values)
        except Exception as exc:
            return self._activation_failed(f"the {self.BUILT} failed to load: "
                                           f"{describe_error(exc)}")  # fmt: skip
        try:
            self._open_inputs(values)
        except Exception as exc:
            return self._activation_failed(f"cannot subscribe: {describe_error(exc)}")
        self._build_error = ""
        self._active_since = time.monotonic()
        self._stop.clear()
        self._slot.reopen()
        self._worker = threading.Thread(target=self._work, name=f"{self.TASK}_worker",
                                        daemon=True)  # fmt: skip
        self._worker.start()
        self.get_logger().info(self._active_message(values))
        return super().on_activate(state)

    def _activation_failed(self, reason: str) -> TransitionCallbackReturn:
        """Undo a half-done activation; ERROR on /diagnostics with the reason and the way out."""
        self._release_active()
        self._build_error = (f"cannot activate: {reason} (set a working value, then: ros2 "
                             f"lifecycle set {self.get_fully_qualified_name()} activate)")
        self.get_logger().error(self._build_error)
        return TransitionCallbackReturn.FAILURE

    def _active_message(self, values: Mapping[str, Any]) -> str:
        return f"active: {self._describe(self._built)}"

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_active()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_configured()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_active()
        self._release_configured()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error while in state {state.label}: releasing everything")
        self._release_active()
        self._release_configured()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._release_active()
        if self._diagnostics is not None:
            self._diagnostics.destroy()
            self._diagnostics = None
        super().destroy_node()

    def _release_active(self) -> None:
        """Undo activate: inputs, worker, pending rebuild, the built object. Idempotent."""
        for handle in self._inputs.values():
            if isinstance(handle, Subscription):
                self.destroy_subscription(handle)
            else:
                handle.destroy()
        self._inputs.clear()
        self._stop.set()
        if self._slot.close() is not None:
            self.counters.inc("dropped_stale")
        if self._worker is not None:
            self._worker.join(timeout=30)
            self._worker = None
        with self._lock:
            self._pending = None
        built, self._built = self._built, None
        self._discard(built)

    def _release_configured(self) -> None:
        """Undo configure: the publishers. Idempotent."""
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs.clear()

    # ------------------------------------------------------------------ the data path
    def _offer(self, item: Any) -> None:
        """Hand the newest input to the worker (from a subscription callback)."""
        if self._slot.put(item):
            self.counters.inc("dropped_stale")

    def _work(self) -> None:
        while not self._stop.is_set():
            item = self._slot.take(timeout=0.2)
            if item is None:
                continue
            try:
                self._apply_pending()
                built = self._built
                if built is not None:
                    self._process(item, built)
            except Exception as exc:  # a bug must not kill the worker: count it and go on
                self._drop("inference", exc)

    def _drop(self, cause: str, exc: BaseException) -> None:
        """Count a dropped input by cause and log it, at most every 5 s per cause."""
        self.counters.inc(f"dropped_{cause}")
        recent = self._recent_drops.get(cause)
        if recent is not None:
            recent.tick()
        now = time.monotonic()
        if now - self._log_times.get(cause, -math.inf) >= 5.0:
            self._log_times[cause] = now
            total = self.counters.get(f"dropped_{cause}")
            self.get_logger().warning(
                f"dropped a {self.ITEM} ({cause}, {total} so far): {describe_error(exc)}")

    def _record_latency(self, received: float, header: Any) -> None:
        """Receive->publish (monotonic) and stamp->publish (node clock) latency of one output."""
        self.latency_receive.add(time.monotonic() - received)
        now_ns = self.get_clock().now().nanoseconds
        stamp_ns = stamp_to_ns(header.stamp)
        if now_ns > 0 and stamp_ns > 0:  # now is 0 under use_sim_time until the first /clock
            self.latency_stamp.add((now_ns - stamp_ns) / 1e9)

    # ------------------------------------------------------------------ diagnostics
    def _collect_diagnostics(self) -> DiagnosticReport:
        values = self.stats()
        if "device" in values and self._diagnostics is not None:
            self._diagnostics.hardware_id = str(values["device"])
        rate = values[f"{self.OUTPUT_RATE}_hz"]
        state = values["state"]
        if self._build_error:
            return DiagnosticReport(ERROR, self._build_error, values)
        if state != "active":
            return DiagnosticReport(OK, f"{state}: not {self.ACTIVITY}", values)
        warnings = [w for w in (self._silence_warning(values), self._warning(values),
                                self._recent_drop_warning()) if w]  # fmt: skip
        message = f"{self.ACTIVITY} at {rate:.1f} Hz"
        if warnings:
            return DiagnosticReport(WARN, "; ".join([message, *warnings]), values)
        return DiagnosticReport(OK, message, values)

    def _silence_warning(self, values: Mapping[str, Any]) -> str | None:
        """The inputs silent for longer than ``input_timeout``, by topic, or None."""
        params = self.parameter_values()
        timeout = float(params.get("input_timeout", INPUT_TIMEOUT.default) or 0.0)
        topics = self._input_topics()
        silent = {topics[name]: values[f"{name}_silent_s"] for name in topics
                  if f"{name}_silent_s" in values}  # fmt: skip
        late = [f"{topic} for {age:.1f} s" for topic, age in silent.items()
                if timeout > 0 and age > timeout]  # fmt: skip
        if not late:
            return None
        return f"no message on {', '.join(late)} (input_timeout {timeout:g} s): is it publishing?"

    def _recent_drop_warning(self) -> str | None:
        """Bad inputs (not stale ones) dropped in the last RECENT_WINDOW_S, by cause, or None."""
        counts = {cause: meter.count() for cause, meter in self._recent_drops.items()}
        total = sum(counts.values())
        if not total:
            return None
        causes = ", ".join(f"{cause} {n}" for cause, n in counts.items() if n)
        return (f"{total} bad {self.ITEM}(s) dropped in the last {self.RECENT_WINDOW_S:g} s "
                f"({causes})")


def own_arguments(args: list[str] | None) -> list[str]:
    """The command line's arguments outside ``--ros-args ... [--]`` blocks (program name off)."""
    own, in_ros = [], False
    for arg in sys.argv[1:] if args is None else args[1:]:
        if arg == "--ros-args":
            in_ros = True
        elif in_ros and arg == "--":
            in_ros = False
        elif not in_ros or arg in ("-h", "--help"):  # rcl has no --help: it is ours anywhere
            own.append(arg)
    return own


def usage(executable: str, params: tuple[Param, ...]) -> str:
    """The ``--help`` text: how to pass parameters, then every parameter of the node."""
    return (f"usage: {executable} [--ros-args [-p NAME:=VALUE ...] [--params-file FILE]]\n\n"
            f"A ROS 2 lifecycle node. Parameters (`ros2 param describe` explains each too):\n\n"
            f"{format_table(params)}\n")


def run_node(factory: type[WorkerNode], executable: str,
             args: list[str] | None = None) -> int:
    """An executable's main: spin until Ctrl-C. ``--help``: the parameter table, exit 0; exit 1
    with the reason on bad parameters, 2 on unknown or malformed arguments.

    ``args``: the whole command line, program name first (None: ``sys.argv``).
    """
    own = own_arguments(args)
    if "-h" in own or "--help" in own:
        print(usage(executable, factory.PARAMS), end="")
        return 0
    if own:
        print(f"{executable}: unknown argument(s) {own}: parameters go after --ros-args "
              f"(-p NAME:=VALUE); --help lists them", file=sys.stderr)
        return 2
    import rclpy
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    try:
        rclpy.init(args=args)
    except Exception as exc:  # rcl's argument errors (an unknown ROS argument, a bad remap)
        print(f"{executable}: invalid ROS arguments: {describe_error(exc)}", file=sys.stderr)
        return 2
    try:
        node = factory()
    except (InvalidParameterValueException, InvalidParameterTypeException, ValueError) as exc:
        print(f"{executable}: invalid parameter: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    return spin_until_shutdown(node)


def spin_until_shutdown(node: Any, work: Callable[[], int | None] | None = None) -> int:
    """Spin ``node`` (or run ``work``, which spins it its own way) until it returns, Ctrl-C or
    an external shutdown; then destroy the node and shut rclpy down. The exit code: what
    ``work`` returned, else 0. The end of every process that runs one node (benchmarks too)."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    try:
        return (work() if work is not None else rclpy.spin(node)) or 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
