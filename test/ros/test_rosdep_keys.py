"""package.xml installs with `rosdep install --from-paths src --ignore-src`.

rosdep stops at the first key it cannot resolve, so every key package.xml names must exist.
The keys are checked against the list below, each with where it is defined: ROS packages in
the rosdistro distribution files (released for both jazzy and humble), system and pip keys in
rosdistro's rosdep/python.yaml (Ubuntu and Debian rules). Every third-party module the package
imports comes either from a declared key or from requirements/ros.txt, and what ros.txt
installs has no usable key.
"""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DEPEND_TAGS = (
    'depend',
    'build_depend',
    'buildtool_depend',
    'build_export_depend',
    'exec_depend',
    'test_depend',
    'doc_depend',
)

# key -> where rosdep finds it (rosdistro as of 2026-08; ROS packages: jazzy and humble release)
ROS_PACKAGES = {
    'ament_index_python': 'distribution.yaml: repository ament_index',
    'builtin_interfaces': 'distribution.yaml: repository rcl_interfaces',
    'rcl_interfaces': 'distribution.yaml: repository rcl_interfaces',
    'diagnostic_msgs': 'distribution.yaml: repository common_interfaces',
    'sensor_msgs': 'distribution.yaml: repository common_interfaces',
    'std_msgs': 'distribution.yaml: repository common_interfaces',
    'std_srvs': 'distribution.yaml: repository common_interfaces',
    'launch': 'distribution.yaml: repository launch',
    'launch_ros': 'distribution.yaml: repository launch_ros',
    'rclpy': 'distribution.yaml: repository rclpy',
}
APT_KEYS = {  # rosdep/python.yaml, apt package of the same name on ubuntu and debian
    'python3-h5py': 'rosdep/python.yaml',
    'python3-matplotlib': 'rosdep/python.yaml',
    'python3-numpy': 'rosdep/python.yaml',
    'python3-opencv': 'rosdep/python.yaml',
    'python3-psutil': 'rosdep/python.yaml',
    'python3-pytest': 'rosdep/python.yaml',
    'python3-tqdm': 'rosdep/python.yaml',
    'python3-yaml': 'rosdep/python.yaml',
}
PIP_KEYS = {  # rosdep/python.yaml, installer pip on ubuntu and debian: key -> pip package
    'python3-onnxruntime-pip': 'onnxruntime',
    'python3-rosbags-pip': 'rosbags',
}
KNOWN_KEYS = {**ROS_PACKAGES, **APT_KEYS, **{k: 'rosdep/python.yaml (pip)' for k in PIP_KEYS}}

# What requirements/ros.txt installs although rosdep has no (usable) key for it.
NO_KEY = {
    'torch': 'python3-torch is the distribution build (Debian 12: 1.13), not the pinned 2.13',
    'safetensors': 'no key in rosdep/python.yaml',
    'onnx': 'no key in rosdep/python.yaml',
    'mcap': 'no key in rosdep/python.yaml',
}

# Every third-party top-level module imported by the package or its launch file, and where it
# comes from on a ROS machine: a rosdep key, a ros.txt line, or why it is left out.
IMPORTS = {
    'ament_index_python': 'ament_index_python',
    'builtin_interfaces': 'builtin_interfaces',
    'diagnostic_msgs': 'diagnostic_msgs',
    'launch': 'launch',
    'launch_ros': 'launch_ros',
    'rcl_interfaces': 'rcl_interfaces',
    'rclpy': 'rclpy',
    'sensor_msgs': 'sensor_msgs',
    'std_msgs': 'std_msgs',
    'std_srvs': 'std_srvs',
    'cv2': 'python3-opencv',
    'h5py': 'python3-h5py',
    'matplotlib': 'python3-matplotlib',
    'numpy': 'python3-numpy',
    'psutil': 'python3-psutil',
    'tqdm': 'python3-tqdm',
    'yaml': 'python3-yaml',
    'onnxruntime': 'python3-onnxruntime-pip',
    'rosbags': 'python3-rosbags-pip',
    'lz4': 'ros.txt:rosbags',  # rosbags' own dependencies, read directly for damaged bags
    'zstandard': 'ros.txt:rosbags',
    'onnx': 'ros.txt:onnx',
    'safetensors': 'ros.txt:safetensors',
    'torch': 'ros.txt:torch',
    'open3d': 'left out: only `rgbd-seg synth` renders with it (python3-open3d-pip, optional)',
}


def package_keys() -> dict[str, list[str]]:
    root = ET.parse(ROOT / 'package.xml').getroot()
    return {tag: [e.text or '' for e in root.findall(tag)] for tag in DEPEND_TAGS}


def ros_txt() -> dict[str, Requirement]:
    lines = (ln.split('#', 1)[0].strip() for ln in (ROOT / 'requirements/ros.txt').open())
    return {canonicalize_name(Requirement(ln).name): Requirement(ln) for ln in lines if ln}


def third_party_imports() -> set[str]:
    local = {'rgbd_seg_ros'}
    found = set()
    files = [*(ROOT / 'rgbd_seg_ros').rglob('*.py'), *(ROOT / 'launch').glob('*.py')]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found.update(n.split('.')[0] for n in names)
    return {m for m in found if m not in sys.stdlib_module_names and m not in local}


def test_build_type_is_exported_not_a_buildtool_key():
    root = ET.parse(ROOT / 'package.xml').getroot()
    assert root.findtext('export/build_type') == 'ament_python'
    assert 'ament_python' not in package_keys()['buildtool_depend']


def test_every_key_is_known_to_rosdep():
    keys = [key for tag_keys in package_keys().values() for key in tag_keys]
    assert len(keys) == len(set(keys)), 'a key is declared twice'
    unknown = sorted(set(keys) - set(KNOWN_KEYS))
    assert unknown == [], f'no rosdep definition known for {unknown}'


def test_every_import_has_a_declared_source():
    declared = {key for keys in package_keys().values() for key in keys}
    pip_step = set(ros_txt())
    missing = sorted(third_party_imports() - set(IMPORTS))
    assert missing == [], f'imports with no source in IMPORTS: {missing}'
    for module in third_party_imports():
        source = IMPORTS[module]
        if source.startswith('ros.txt:'):
            assert source.removeprefix('ros.txt:') in pip_step, module
        elif not source.startswith('left out:'):
            assert source in declared, f'{module}: {source} not in package.xml'
    assert 'ament_index_python' in package_keys()['exec_depend']  # the launch file imports it


def test_pip_step_holds_only_what_has_no_key_and_pins_the_pip_keys():
    pip_step = ros_txt()
    declared_pip = {PIP_KEYS[k] for k in package_keys()['exec_depend'] if k in PIP_KEYS}
    assert declared_pip == set(PIP_KEYS.values())
    for package in declared_pip:  # the tested version is in the venv before rosdep runs
        assert str(pip_step[package].specifier).startswith('=='), package
    # numpy is apt's (python3-numpy); the line only keeps pip from replacing it with 2.x
    assert set(pip_step) - declared_pip - {'numpy'} == set(NO_KEY)
