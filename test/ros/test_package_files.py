"""The files a ROS 2 user touches: launch file, params YAML, RViz config, camera presets,
package.xml, and the wheel layout colcon/pip install from."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
import yaml

from rgbd_seg_ros.ros import node_params

ROOT = Path(__file__).resolve().parents[2]


def flatten(tree: dict, prefix: str = '') -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = value
    return out


def test_segment_yaml_equals_declared_defaults():
    data = yaml.safe_load((ROOT / 'config' / 'segment.yaml').read_text())
    values = flatten(data['/**']['ros__parameters'])
    assert values == {spec.name: spec.default for spec in node_params.PARAMS}
    for name, value in values.items():
        assert node_params.validate(name, value) is None


@pytest.mark.parametrize(
    'name,value',
    [
        ('device', 'gpu'),
        ('precision', 'fp8'),
        ('slop', -0.1),
        ('queue_size', 0),
        ('overlay_alpha', 2.0),
        ('points.max_range', 0.0),
        ('publish.points', 'yes'),
        ('points.min_confidence', float('nan')),
        ('resolution_policy', 'any'),
    ],
)
def test_bad_parameter_values_have_reasons(name, value):
    reason = node_params.validate(name, value)
    assert reason and name in reason


def launch_source() -> str:
    return (ROOT / 'launch' / 'segment.launch.py').read_text()


def console_scripts() -> set[str]:
    tree = ast.parse((ROOT / 'setup.py').read_text())
    scripts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and ' = ' in node.value:
            scripts.add(node.value.split(' = ')[0])
    return scripts


def test_launch_file_names_existing_executables_and_files():
    source = launch_source()
    tree = ast.parse(source)
    started = set()  # (package, executable) of every Node the launch file builds
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            kws = {kw.arg: kw.value for kw in node.keywords}
            if 'executable' in kws:
                package = kws['package']
                own = isinstance(package, ast.Name) and package.id == 'PACKAGE'
                started.add(('rgbd_seg_ros' if own else package.value, kws['executable'].value))
    assert started == {('rgbd_seg_ros', 'segmentation_node'), ('rviz2', 'rviz2')}
    executables = {exe for package, exe in started if package == 'rgbd_seg_ros'}
    assert executables <= console_scripts()
    assert "'segment.yaml'" in source and (ROOT / 'config' / 'segment.yaml').is_file()
    assert {'trainer_node', 'rgbd-seg', 'segmentation_node'} <= console_scripts()


@pytest.mark.skipif(
    importlib.util.find_spec('launch_ros') is None,
    reason='launch_ros not installed (no ROS 2 distribution here)',
)
def test_launch_description_loads(installed_share):
    spec = importlib.util.spec_from_file_location(
        'segment_launch', ROOT / 'launch' / 'segment.launch.py'
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.generate_launch_description().entities


def test_camera_presets_have_the_three_topics():
    presets = sorted((ROOT / 'config' / 'cameras').glob('*.yaml'))
    assert {p.stem for p in presets} >= {'realsense', 'azure_kinect', 'zed', 'oakd'}
    for preset in presets:
        topics = yaml.safe_load(preset.read_text())['topics']
        assert set(topics) == {'rgb', 'depth', 'info'}
        assert all(t.startswith('/') for t in topics.values())


def test_rviz_config_uses_the_node_default_topics():
    from rgbd_seg_ros.ros.segmentation_node import OUTPUT_TOPICS

    config = yaml.safe_load((ROOT / 'rviz' / 'segment.rviz').read_text())
    displays = config['Visualization Manager']['Displays']
    topics = {d['Topic']['Value'] for d in displays if 'Topic' in d}
    assert topics == {'/' + OUTPUT_TOPICS[n] for n in ('overlay', 'points', 'confidence')}


def test_package_xml_is_format3_ament_python():
    root = ET.parse(ROOT / 'package.xml').getroot()
    assert root.get('format') == '3'
    assert root.findtext('name') == 'rgbd_seg_ros'
    assert root.find('export/build_type').text == 'ament_python'
    depends = {e.text for e in root.findall('exec_depend')}
    assert {'rclpy', 'sensor_msgs', 'diagnostic_msgs', 'std_srvs'} <= depends


@pytest.mark.slow
def test_wheel_contains_share_files_and_ament_marker(tmp_path):
    subprocess.run(
        [
            sys.executable,
            '-m',
            'pip',
            'wheel',
            '--no-deps',
            '--no-build-isolation',
            '-q',
            '-w',
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    wheel = next(tmp_path.glob('rgbd_seg_ros-*.whl'))
    names = zipfile.ZipFile(wheel).namelist()
    assert 'rgbd_seg_ros/py.typed' in names  # the package ships its type hints
    data = [n.split('.data/data/', 1)[1] for n in names if '.data/data/' in n]
    assert 'share/ament_index/resource_index/packages/rgbd_seg_ros' in data
    for folder in ('launch', 'config', 'rviz', 'models'):
        assert any(n.startswith(f'share/rgbd_seg_ros/{folder}/') for n in data), folder
    assert 'share/rgbd_seg_ros/launch/segment.launch.py' in data
    assert 'share/rgbd_seg_ros/config/segment.yaml' in data
