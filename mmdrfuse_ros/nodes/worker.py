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

One diagnostics policy for both nodes: a failed build or rebuild is ERROR, an inactive node OK
("<state>: not <activity>"), a node-specific warning or bad inputs WARN, otherwise OK with the
output rate. The lifecycle state is rclpy's own state machine.
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
from mmdrfuse_ros.settings.spec import Param, by_name
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


class WorkerNode(LifecycleNode):
    """Base of the fusion and detector nodes.

    A subclass sets the class attributes below and implements ``_check``, ``_build``,
    ``_describe``, ``_open_outputs`` (on configure, into ``self._outputs``), ``_open_inputs``
    (on activate, into ``self._inputs``) and ``_process``; optionally ``_identity`` (extra
    stats) and ``_warning`` (a node-specific WARN condition). Attributes its callbacks use must
    exist before ``WorkerNode.__init__`` runs, since that may configure and activate the node.
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

    def __init__(self, node_name: str, **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        self._specs = by_name(self.PARAMS)
        self.counters = Counters((*self.COUNTERS, *(f"dropped_{c}" for c in self.DROP_CAUSES)))
        self.rates = {name: RateMeter() for name in self.RATES}
        self.latency_receive = LatencyStats()
        self.latency_stamp = LatencyStats()
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
            if reason := self._check(self.parameter_values(), None):
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
        return values

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in params if p.name in self._specs}
        if not changes or not all_declared(self, self.PARAMS):
            return SetParametersResult(successful=True)  # declaring: checked as a whole after
        values = {**self.parameter_values(), **changes}
        live = sorted(name for name in changes if self._specs[name].live)
        if reason := self._check(values, set(changes)):
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
            self._build_error = f"{self.BUILT} rebuild failed, keeping the previous one: {exc}"
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
        if reason := self._check(values, None):
            self.get_logger().error(f"cannot configure: {reason}")
            return TransitionCallbackReturn.FAILURE
        self._open_outputs(values)
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            self._pending = None  # built from the current values just below
        values = self.parameter_values()
        try:
            self._built = self._build(values)
        except Exception as exc:
            self._build_error = str(exc)
            self.get_logger().error(f"cannot activate: the {self.BUILT} failed to load: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._build_error = ""
        self._open_inputs(values)
        self._stop.clear()
        self._slot.reopen()
        self._worker = threading.Thread(target=self._work, name=f"{self.TASK}_worker",
                                        daemon=True)  # fmt: skip
        self._worker.start()
        self.get_logger().info(self._active_message(values))
        return super().on_activate(state)

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
        now = time.monotonic()
        if now - self._log_times.get(cause, -math.inf) >= 5.0:
            self._log_times[cause] = now
            total = self.counters.get(f"dropped_{cause}")
            self.get_logger().warning(f"dropped a {self.ITEM} ({cause}, {total} so far): {exc}")

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
        bad = sum(values[f"dropped_{c}"] for c in self.DROP_CAUSES if c != "stale")
        rate = values[f"{self.OUTPUT_RATE}_hz"]
        state = values["state"]
        if self._build_error:
            level, message = ERROR, self._build_error
        elif state != "active":
            level, message = OK, f"{state}: not {self.ACTIVITY}"
        elif warning := self._warning(values):
            level, message = WARN, warning
        elif bad:
            level, message = WARN, f"{self.ACTIVITY} at {rate:.1f} Hz; {bad} bad {self.ITEM}s"
        else:
            level, message = OK, f"{self.ACTIVITY} at {rate:.1f} Hz"
        return DiagnosticReport(level, message, values)


def run_node(factory: Callable[[], WorkerNode], executable: str,
             args: list[str] | None = None) -> int:
    """An executable's main: spin until Ctrl-C; exit 1 with the reason on bad parameters."""
    import rclpy
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=args)
    try:
        node = factory()
    except (InvalidParameterValueException, InvalidParameterTypeException, ValueError) as exc:
        print(f"{executable}: invalid parameter: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
