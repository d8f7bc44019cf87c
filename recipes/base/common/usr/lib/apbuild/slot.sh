# shellcheck shell=sh
# sda1's two slots: an update writes the new sda1 into the half of its reserved area that
# the current one does not use, reads it back, and then points partition BOOT_NUMBER at it.
# The switch is one sector (the MBR): before it the old sda1 is in the table, after it the
# new one; so a power cut at any moment leaves one whole, bootable sda1.
# Sourced after /etc/apbuild/device.conf (DISK, BOOT_NUMBER, BOOT_TYPE, SLOT_A, SLOT_B,
# SLOT_SECTORS); each function prints why it failed on stderr and returns non-zero.

# The start sector of partition BOOT_NUMBER in DISK's table.
slot_current() {
    sfdisk -d "$DISK" 2>/dev/null | sed -n "s|^${DISK}${BOOT_NUMBER} : start= *\([0-9]*\),.*|\1|p"
}

# slot_other START: the slot an update writes into.
slot_other() {
    if [ "$1" = "$SLOT_A" ]; then echo "$SLOT_B"; else echo "$SLOT_A"; fi
}

# slot_fits SIZE: does an sda1 of SIZE bytes fit in a slot?
slot_fits() {
    [ $(( ($1 + 511) / 512 )) -le "$SLOT_SECTORS" ]
}

# slot_write SECTOR SIZE SHA256 < IMAGE: write the image at SECTOR (MiB-aligned) and read
# it back; fails unless what the disk holds now has the SHA-256 the signed manifest gave.
slot_write() {
    if ! slot_fits "$2"; then
        echo "slot_write: $2 bytes do not fit in a slot of $SLOT_SECTORS sectors" >&2
        return 1
    fi
    dd of="$DISK" bs=1M seek=$(($1 / 2048)) conv=notrunc,fsync 2>/dev/null || {
        echo "slot_write: writing at sector $1 failed" >&2
        return 1
    }
    sync
    # count_bytes: dd stops at the image's end itself (busybox's head -c, a byte at a time,
    # took 7 s of an emulated VM's CPU for 55 MB).
    got=$(dd if="$DISK" bs=1M skip=$(($1 / 2048)) count="$2" iflag=count_bytes 2>/dev/null \
          | sha256sum | cut -d' ' -f1)
    if [ "$got" != "$3" ]; then
        echo "slot_write: the slot at sector $1 reads back wrong" >&2
        return 1
    fi
}

# slot_switch SECTOR SIZE: point partition BOOT_NUMBER at the sda1 of SIZE bytes at SECTOR.
slot_switch() {
    echo "start=$1, size=$(( ($2 + 511) / 512 )), type=$BOOT_TYPE, bootable" \
        | sfdisk --no-reread --no-tell-kernel --force -N "$BOOT_NUMBER" "$DISK"
}
