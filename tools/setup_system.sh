#!/usr/bin/env bash
# Install the Debian packages the Python dependencies need at run time, only if missing.
#   libusb-1.0-0 : open3d 0.20 and pyusb fail to import/open without libusb-1.0.so.0
#   python3-venv : `python3 -m venv` needs ensurepip, which Debian ships separately
#   chromium     : (ZEDD_WITH_BROWSER=1) the report-rendering test
set -euo pipefail
has_lib() {  # ldconfig lives in /sbin, which is not on a normal user's PATH; dpkg knows too
  { PATH="$PATH:/sbin:/usr/sbin" ldconfig -p 2>/dev/null | grep -q "$1"; } ||
    dpkg-query -W -f='${Status}' "$2" 2>/dev/null | grep -q "ok installed"
}
need=()
has_lib 'libusb-1.0.so.0' libusb-1.0-0 || need+=(libusb-1.0-0)
[ -x .venv/bin/pip ] || python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if [ "${ZEDD_WITH_BROWSER:-0}" = "1" ] && ! [ -x /usr/bin/chromium ]; then need+=(chromium); fi
[ ${#need[@]} -eq 0 ] && exit 0
echo "setup: installing Debian packages: ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: needs the Debian packages ${need[*]}: install them as root (apt-get install ${need[*]}), then run make again" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}"; }
