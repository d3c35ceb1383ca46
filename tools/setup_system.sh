#!/usr/bin/env bash
# Install the Debian packages the Python dependencies need at run time, only if missing.
#   libusb-1.0-0 : open3d 0.20 and pyusb fail to import/open without libusb-1.0.so.0
set -euo pipefail
need=()
ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || need+=(libusb-1.0-0)
if [ "${ZEDD_WITH_BROWSER:-0}" = "1" ] && ! [ -x /usr/bin/chromium ]; then need+=(chromium); fi
[ ${#need[@]} -eq 0 ] && exit 0
echo "setup: installing Debian packages: ${need[*]}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}"; }
