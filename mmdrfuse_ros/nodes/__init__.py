"""ROS 2 layer: the fusion and detector nodes and the helpers they share.

``worker`` (the WorkerNode base: lifecycle, parameters, mailbox, worker thread, diagnostics
policy), ``params`` (parameter tables -> ROS descriptors), ``qos``, ``sync``, ``diagnostics``.
The parameter tables themselves and their validation are ROS-free, in :mod:`mmdrfuse_ros.settings`;
numpy <-> message conversion is in :mod:`mmdrfuse_ros.msgs`.
"""
