#!/usr/bin/env bash
# `./run CMD...` for a GPU machine whose own python3 already holds a CUDA build of torch (a
# vendor's or a cluster's image), where ./run's pinned CPU build is the wrong torch and the
# package registries may be out of reach. Once, it makes a venv in $RGBD_SEG_IMAGE_ENV
# (default /tmp/rgbd_seg_image_env) that sees that python3's packages (also when that python3
# is itself a venv, which --system-site-packages alone would miss), installs offline the
# wheels in the folder $RGBD_SEG_WHEELS if set (for instance the ROS 2 Jazzy wheels for that
# Python, downloaded beforehand where PyPI is reachable: README, "GPU check"), and installs
# this checkout editable; then it runs CMD inside it.
#   GPU_CHECK_RUN=bench/with_image_python.sh bench/gpu_check.sh OUT_DIR
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_DIR="${RGBD_SEG_IMAGE_ENV:-/tmp/rgbd_seg_image_env}"
PYTHON="${RGBD_SEG_IMAGE_PYTHON:-python3}"

make_env() {
  echo "[with_image_python] making $ENV_DIR over $(command -v "$PYTHON")" >&2
  "$PYTHON" -m venv --without-pip --system-site-packages "$ENV_DIR"
  # The image's own site folders, after the env's: its torch, numpy, pip and setuptools (the
  # env's python runs the image's pip, which installs into the env).
  local purelib
  purelib="$("$ENV_DIR/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  "$PYTHON" -c 'import site; print("\n".join(site.getsitepackages()))' >"$purelib/image_site.pth"
  local pip=("$ENV_DIR/bin/python" -m pip install -q --no-index --no-deps --no-compile)
  if [ -n "${RGBD_SEG_WHEELS:-}" ]; then
    "${pip[@]}" "$RGBD_SEG_WHEELS"/*.whl
  fi
  "${pip[@]}" --no-build-isolation -e "$ROOT"
  touch "$ENV_DIR/.rgbd_seg_ros-image-env"
}

[ -f "$ENV_DIR/.rgbd_seg_ros-image-env" ] || make_env >&2
export VIRTUAL_ENV="$ENV_DIR" PATH="$ENV_DIR/bin:$PATH"
exec "$@"
