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

# sha256 [FILE]: the SHA-256 of FILE (or of standard input) in hex. OpenSSL's, not busybox's
# sha256sum, which took about a third more of an emulated VM's CPU for the same 64 MB; a
# device checks every upload, every slot it writes and every install this way.
sha256() {
    openssl dgst -sha256 -r ${1:+"$1"} | cut -d' ' -f1
}

# sha256_check SUMS: what 'sha256sum -c SUMS' does, by sha256 (a line "FILE: OK" or
# "FILE: FAILED" per file). Fails if a file is missing or differs, and if SUMS is missing
# or names no file (a cut may leave it empty).
sha256_check() {
    [ -s "$1" ] || { echo "$1: missing or empty"; return 1; }
    sums_ok=0 sums_seen=0
    while read -r want file; do
        file=${file#\*}                      # sha256sum's binary-mode mark
        sums_seen=$((sums_seen + 1))
        if [ -f "$file" ] && [ "$(sha256 "$file")" = "$want" ]; then
            echo "$file: OK"
        else
            echo "$file: FAILED"; sums_ok=1
        fi
    done < "$1"
    [ "$sums_seen" -gt 0 ] && return $sums_ok
}

# phase NAME: a machine-readable line for the power-cut tests and the benchmark
# ("apbuild-phase: update-write"), on the console and in $LOG when there is one.
phase() {
    echo "apbuild-phase: $1"
    if [ -n "${LOG:-}" ]; then echo "apbuild-phase: $1" >> "$LOG"; fi
}
