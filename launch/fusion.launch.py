"""Thermal/RGB fusion and pedestrian detection.

    ros2 launch mmdrfuse_ros fusion.launch.py \\
        thermal_topic:=/flir/image_raw rgb_topic:=/camera/color/image_raw device:=cuda

Starts ``fusion_node`` with ``config/fusion.yaml`` and ``detector_node`` with
``config/detector.yaml`` (both from this package's share directory).

Activation: both nodes are lifecycle-aware and activate themselves (``autostart: true``), so
this file starts them as plain nodes and needs no lifecycle event plumbing, and they behave the
same under ``ros2 run``, this launch file and the in-process replay tool. With
``autostart:=false`` the fusion node waits in ``unconfigured`` for a lifecycle manager or
``ros2 lifecycle set /fusion_node configure`` / ``activate``.

Transport: unless ``FASTDDS_DEFAULT_PROFILES_FILE`` or ``FASTRTPS_DEFAULT_PROFILES_FILE`` (the
Fast DDS 2.x name) is already exported, the nodes get ``config/fastdds_large_data.xml``, a larger
shared-memory segment so that best-effort camera images are not lost (see the README).
``fastdds_profile:=''`` turns it off; ``fastdds_profile:=/path/my.xml`` uses yours. The profile
changes no discovery settings.

The ``device`` and ``weights`` arguments override the values in ``config/fusion.yaml`` (their
defaults, "", are the same as the file's: automatic device, shipped weights).
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription
from mmdrfuse_ros import topics

PACKAGE = "mmdrfuse_ros"
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def generate_launch_description() -> LaunchDescription:
    config = Path(get_package_share_directory(PACKAGE)) / "config"
    arg = LaunchConfiguration
    arguments = [
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (bag replay)"),
        DeclareLaunchArgument("device", default_value="",
                              description="fusion device: '' (auto), cpu, cuda, cuda:N"),
        DeclareLaunchArgument("weights", default_value="",
                              description="student checkpoint; '' = the shipped default"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="the fusion node configures and activates itself"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of both nodes"),
        DeclareLaunchArgument("thermal_topic", default_value=topics.THERMAL_IMAGE,
                              description="thermal image input"),
        DeclareLaunchArgument("rgb_topic", default_value=topics.RGB_IMAGE,
                              description="RGB image input"),
        DeclareLaunchArgument("rgb_info_topic", default_value=topics.RGB_CAMERA_INFO,
                              description="RGB camera_info (with publish_camera_info: true)"),
        DeclareLaunchArgument("fused_topic", default_value=topics.FUSED_IMAGE,
                              description="fused image: fusion output, detector input"),
        DeclareLaunchArgument("fastdds_profile",
                              default_value=str(config / "fastdds_large_data.xml"),
                              description="Fast DDS XML profile for the nodes ('' = none); "
                              "an already exported FASTDDS_DEFAULT_PROFILES_FILE wins"),
    ]  # fmt: skip

    # our profile only where the user has exported none of their own (under either name)
    condition = ["'", arg("fastdds_profile"), "' != ''"]
    for name in PROFILE_VARIABLES:
        condition += [" and '", EnvironmentVariable(name, default_value=""), "' == ''"]
    use_profile = IfCondition(PythonExpression(condition))
    environment = [
        SetEnvironmentVariable(name, arg("fastdds_profile"), condition=use_profile)
        for name in PROFILE_VARIABLES
    ]

    use_sim_time = ParameterValue(arg("use_sim_time"), value_type=bool)
    fusion = Node(
        package=PACKAGE,
        executable="fusion_node",
        name="fusion_node",
        namespace=arg("namespace"),
        output="screen",
        parameters=[
            str(config / "fusion.yaml"),
            {
                "use_sim_time": use_sim_time,
                "device": ParameterValue(arg("device"), value_type=str),
                "weights": ParameterValue(arg("weights"), value_type=str),
                "autostart": ParameterValue(arg("autostart"), value_type=bool),
            },
        ],
        remappings=[
            (topics.THERMAL_IMAGE, arg("thermal_topic")),
            (topics.RGB_IMAGE, arg("rgb_topic")),
            (topics.RGB_CAMERA_INFO, arg("rgb_info_topic")),
            (topics.FUSED_IMAGE, arg("fused_topic")),
        ],
    )
    detector = Node(
        package=PACKAGE,
        executable="detector_node",
        name="detector_node",
        namespace=arg("namespace"),
        output="screen",
        parameters=[str(config / "detector.yaml"), {"use_sim_time": use_sim_time}],
        remappings=[(topics.FUSED_IMAGE, arg("fused_topic"))],
    )
    return LaunchDescription([*arguments, *environment, fusion, detector])
