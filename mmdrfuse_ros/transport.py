"""Fast DDS transport profile: the variable names and which profile a process should get.

Large images need a larger shared-memory segment than Fast DDS's default, so the replay, the
launch file and the transport benchmark give their processes the package's
``config/fastdds_large_data.xml`` (transport only: segment size and socket buffers; discovery is
left as the user set it), unless the user has exported a profile of their own.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Fast DDS 3 (Jazzy and later, and the PyPI wheels) reads the first and warns about the second;
#: Fast DDS 2 (Humble, Iron) reads only the second.
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
#: the package's large-data profile, under ``config/``.
DEFAULT_PROFILE_NAME = "fastdds_large_data.xml"
#: ROS distributions whose Fast DDS reads only the old variable name.
_FASTRTPS_DISTROS = ("humble", "iron")


def default_profile() -> str | None:
    """Path of the package's large-data profile, or None where it is not installed."""
    from mmdrfuse_ros.resources import config_path

    try:
        return str(config_path(DEFAULT_PROFILE_NAME))
    except FileNotFoundError:
        return None


def profile_variable(environ: Mapping[str, str]) -> str:
    """The variable the Fast DDS of this ROS distribution reads."""
    old = environ.get("ROS_DISTRO", "") in _FASTRTPS_DISTROS
    return PROFILE_VARIABLES[1] if old else PROFILE_VARIABLES[0]


def user_profile_set(environ: Mapping[str, str]) -> bool:
    """True when the user exported a profile of their own (which always wins)."""
    return any(environ.get(v) for v in PROFILE_VARIABLES)


def profile_environment(requested: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """Variables to add to ``environ`` so that Fast DDS loads the right profile.

    ``requested`` None: the package's large-data profile; ``""``: none (Fast DDS defaults); a
    path: that file. Empty when the user already exported one of ``PROFILE_VARIABLES``.
    """
    if user_profile_set(environ):
        return {}
    profile = default_profile() if requested is None else requested
    if not profile:
        return {}
    return {profile_variable(environ): profile}
