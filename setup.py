"""Build script shared by colcon (ament_python) and plain pip.

Data folders are installed under ``share/rgbd_seg_ros`` with their relative layout kept, so
``launch/``, ``config/``, ``models/`` and ``rviz/`` are found the same way after a colcon
build and after ``pip install``.
"""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'rgbd_seg_ros'
DATA_DIRS = ('launch', 'config', 'models', 'rviz')


def share_files() -> list[tuple[str, list[str]]]:
    """Map every file below DATA_DIRS to its install folder in share/<package>."""
    entries: dict[str, list[str]] = {}
    for top in DATA_DIRS:
        for path in sorted(glob(os.path.join(top, '**', '*'), recursive=True)):
            if os.path.isfile(path) and '__pycache__' not in path:
                target = os.path.join('share', PACKAGE, os.path.dirname(path))
                entries.setdefault(target, []).append(path)
    return sorted(entries.items())


def read_version() -> str:
    """Single source of the version: rgbd_seg_ros/__init__.py."""
    with open(os.path.join(PACKAGE, '__init__.py'), encoding='utf-8') as stream:
        for line in stream:
            if line.startswith('__version__'):
                return line.split('=')[1].strip().strip('\'"')
    raise RuntimeError('no __version__ in package')


setup(
    name=PACKAGE,
    version=read_version(),
    packages=find_packages(exclude=['test', 'test.*']),
    package_data={PACKAGE: ['py.typed']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        *share_files(),
    ],
    install_requires=['setuptools'],
    zip_safe=False,
    maintainer='rgbd_seg_ros developers',
    maintainer_email='rgbd-seg-ros@users.noreply.github.com',
    description='RGB-D semantic segmentation for ROS 2: SSMA, RFBNet, NANet backends, '
    'synchronised inference node, recording-to-dataset conversion and training.',
    license='Apache-2.0',
    python_requires='>=3.10',
    entry_points={
        'console_scripts': [
            'segmentation_node = rgbd_seg_ros.ros.entry_points:segmentation_node',
            'trainer_node = rgbd_seg_ros.ros.entry_points:trainer_node',
            'rgbd-seg = rgbd_seg_ros.cli.main:main',
            'rgbd-seg-demo = rgbd_seg_ros.tools.demo:main',
        ],
    },
)
