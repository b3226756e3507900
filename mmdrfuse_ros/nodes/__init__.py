"""ROS 2 layer: the fusion and detector nodes and the helpers they share.

Modules here import rclpy and message packages; the ROS-free core is :mod:`mmdrfuse_ros.fusion`.
``image_conversion`` needs only numpy/OpenCV (and sensor_msgs to build messages).
"""
