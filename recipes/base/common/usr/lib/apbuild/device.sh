# shellcheck shell=sh
# The device library: ". /usr/lib/apbuild/device.sh" reads the device contract
# (/etc/apbuild/device.conf: the layout, slots, sda1 file names, bootloader, platform) and
# defines the functions the commands share: slots (slot.sh) and boot modes (bootmode.sh).
# APBUILD_CONF and APBUILD_LIB name another contract and library directory: the tests run
# these functions on the build host, on image files.

# shellcheck source=/dev/null
. "${APBUILD_CONF:-/etc/apbuild/device.conf}"
# shellcheck source=/dev/null
. "${APBUILD_LIB:-/usr/lib/apbuild}/slot.sh"
# shellcheck source=/dev/null
. "${APBUILD_LIB:-/usr/lib/apbuild}/bootmode.sh"

# phase NAME: a machine-readable line for the power-cut tests and the benchmark
# ("apbuild-phase: update-write"), on the console and in $LOG when there is one.
phase() {
    echo "apbuild-phase: $1"
    if [ -n "${LOG:-}" ]; then echo "apbuild-phase: $1" >> "$LOG"; fi
}
