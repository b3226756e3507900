"""ament_python package that also installs with plain pip (``pip install -e .``)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mmdrfuse_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={
        f"{PACKAGE}.fusion": ["weights/*.pt", "weights/*.json"],
        f"{PACKAGE}.training": ["presets/*.yaml"],
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/weights", glob(f"{PACKAGE}/fusion/weights/*.pt")),
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "opencv-python-headless", "torch", "pyyaml", "tqdm"],
    extras_require={
        "bag": ["rosbags"],
        "plots": ["matplotlib"],
        "onnx": ["onnxruntime", "onnx"],
        "test": ["pytest", "ruff"],
    },
    zip_safe=False,
    maintainer="mmdrfuse_ros maintainers",
    maintainer_email="maintainers@mmdrfuse-ros.invalid",
    description="Real-time thermal/RGB image fusion (MMDRFuse) and pedestrian detection for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "mmdrfuse = mmdrfuse_ros.cli:main",
            "fusion_node = mmdrfuse_ros.nodes.fusion_node:main",
            "detector_node = mmdrfuse_ros.nodes.detector_node:main",
        ],
    },
)
