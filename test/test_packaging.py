"""The package installs like a ROS package: data files under share/, found at run time."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_package_xml_is_format_3_ament_python_with_rosdep_keys():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "mmdrfuse_ros"
    assert root.find("export/build_type").text == "ament_python"
    depends = {e.text for e in root if e.tag.endswith("depend")}
    for key in ("rclpy", "sensor_msgs", "diagnostic_msgs", "python3-numpy", "python3-opencv"):
        assert key in depends
    assert (REPO / "resource" / "mmdrfuse_ros").is_file()


def test_setup_declares_console_scripts_and_share_data():
    tree = ast.parse((REPO / "setup.py").read_text())
    text = ast.unparse(tree)
    for script in ("mmdrfuse = ", "fusion_node = ", "detector_node = "):
        assert script in text
    for share in ("share/{PACKAGE}/launch", "share/{PACKAGE}/config", "share/{PACKAGE}/weights"):
        assert share in text


def test_editable_install_finds_config_and_weights():
    from mmdrfuse_ros.resources import default_weights_path, share_dir

    assert share_dir() is not None and (share_dir() / "config").is_dir()
    assert default_weights_path().is_file()


def test_prefix_install_finds_share_files_and_weights(tmp_path):
    """A non-editable install into its own prefix, used from outside the source tree."""
    prefix = tmp_path / "prefix"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--ignore-installed",  # never uninstall the editable install of the running venv
         "--prefix", str(prefix), str(REPO)],
        check=True, cwd=tmp_path,
    )
    site = next(prefix.glob("lib/python*/site-packages"))
    probe = (
        "import mmdrfuse_ros.resources as r, pathlib;"
        "assert 'site-packages' in r.__file__, r.__file__;"
        "s = r.share_dir(); print(s);"
        "assert (s / 'config').is_dir() and (s / 'launch').is_dir(), s;"
        "assert r.default_weights_path().is_file();"
        "from mmdrfuse_ros.fusion import FusionEngine; FusionEngine(backend='torch')"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert str(prefix) in result.stdout
