"""``mmdrfuse replay``: play a bag through the fusion and detector nodes and measure them.

What runs, and which module owns it:

* :mod:`~mmdrfuse_ros.replay.plan`: the options and a pre-scan of the bag (topics, types,
  stamps, calibration, ground truth), so a bag that cannot work is refused in words;
* :mod:`~mmdrfuse_ros.replay.player`: a process that publishes the bag with its recorded timing
  (scaled by ``rate``) and ``/clock``, so nodes run under ``use_sim_time``;
* :mod:`~mmdrfuse_ros.replay.session`: the fusion and detector nodes in this process (or,
  ``external``, nodes started elsewhere), a transport floor, and the recorder of every output;
* :mod:`~mmdrfuse_ros.replay.measurements`: what was recorded, as plain data;
* :mod:`~mmdrfuse_ros.replay.analysis` (counts, drops, latency, rates) and
  :mod:`~mmdrfuse_ros.replay.quality` (fusion metrics, AP, pictures), which fill the typed
  sections of :mod:`~mmdrfuse_ros.replay.sections`;
* :mod:`~mmdrfuse_ros.replay.report`: report.json, report.md, report.html and the plots;
  :mod:`~mmdrfuse_ros.replay.saving`: the ``--report`` folder checked first, and a fallback
  folder when writing fails at the end;
* :mod:`~mmdrfuse_ros.replay.signals`: SIGINT/SIGTERM into a partial ``interrupted`` report;
  :mod:`~mmdrfuse_ros.replay.external`: ``--external`` nodes checked against the bag's
  calibration (their ``homography`` parameter);
* :mod:`~mmdrfuse_ros.replay.run`: ``run_replay(options) -> (report, exit code)``;
  :mod:`~mmdrfuse_ros.replay.cli`: ``mmdrfuse replay`` and ``mmdrfuse demo``.
"""
