"""numpy <-> ROS message conversion shared by the nodes, the bag tools and the replay.

``images`` (sensor_msgs/Image), ``compressed`` (sensor_msgs/CompressedImage) and ``detections``
(vision_msgs/Detection2DArray or its JSON stand-in). No rclpy: message classes are imported
inside the functions that build messages, and reading accepts any object with the same fields
(rclpy messages and rosbags messages alike).
"""
