#!/bin/sh
# shellcheck disable=SC2015  # 'a && b || fail': fail when any step fails, as meant
# install_step1.sh LOG [install|update|resize] -- the App Platform installer.
# The layout comes from the device contract (/etc/apbuild/device.conf, through
# /usr/lib/apbuild/device.sh); below, sda1 is the boot partition, sda2 data, sda3 rootfs, sda4 swap.
#
# install: create sda3 (ext4), sda4 (swap) and sda2 (ext4, the rest of the disk, physically
#          last), unpack the rootfs from sda1, switch the boot to normal and reboot. Every step
#          may be cut by a power loss and run again: the "pending" file on sda1 stays until
#          the end, and sda2 is only formatted when it holds no ext4 filesystem yet (data is
#          never at risk).
# update:  (rescue system, old image) write the new sda1 of the update staged by update-image
#          on sda2 into the half of sda1's reserved area the current one does not use, read it
#          back, then point partition 1 at it (one sector written) and reboot: the new
#          image's rescue system runs its install, which keeps sda2. A cut before the switch
#          redoes the update; a refused update leaves the old image running.
# resize:  grow sda2 and its filesystem to the end of an enlarged disk, then reboot.
# The log ends with the line "finished" when the action has succeeded (for an update: when
# the new image's install has). Lines "apbuild-phase: NAME" mark the phases for the tests.
set -u
LOG=${1:?usage: install_step1.sh LOG [install|update|resize]}
ACTION=${2:-install}
PATH=/usr/sbin:/usr/bin
# shellcheck source=/dev/null
. "${APBUILD_LIB:-/usr/lib/apbuild}/device.sh"
# shellcheck source=/dev/null
. "${APBUILD_LIB:-/usr/lib/apbuild}/provision.sh"
BOOT=$BOOT_MOUNT
# root's and admin's password hashes that every install sets: provisioned ones, and before an
# update the ones the old image had (so neither an update nor a reinstall brings the defaults back).
KEPT=/mnt/sda2/etc/provisioned-shadow
# The apps' own accounts (passwd, group, shadow lines) that an update carries over.
ACCOUNTS=/mnt/sda2/etc/kept-accounts

is_mounted() { grep -q " $1 " /proc/mounts; }
log() { echo "$(date '+%Y-%m-%d %H:%M:%S') $*" >> "$LOG"; echo "$*"; }
save_log() {
    # The manager serves this copy as /manager/ramdisk.log. An earlier log that did not end
    # with "finished" (the update's first half, a run cut by a power loss) is kept in front.
    if is_mounted /mnt/sda2; then
        mkdir -p /mnt/sda2/log /mnt/sda2/apps
        if [ ! -e /tmp/ramdisk.log.before ]; then
            if [ "$(tail -n 1 /mnt/sda2/log/ramdisk.log 2>/dev/null)" != finished ]; then
                cp /mnt/sda2/log/ramdisk.log /tmp/ramdisk.log.before 2>/dev/null || : > /tmp/ramdisk.log.before
            else
                : > /tmp/ramdisk.log.before
            fi
        fi
        cat /tmp/ramdisk.log.before "$LOG" > /mnt/sda2/log/ramdisk.log.new \
            && mv /mnt/sda2/log/ramdisk.log.new /mnt/sda2/log/ramdisk.log
        cp "$LOG" /mnt/sda2/apps/install_step1.log
        sync
    fi
}
fail() { log "ERROR: $*"; save_log; exit 1; }
step() { log "+ $*"; "$@" >> "$LOG" 2>&1 || fail "'$*' failed"; }

unpack() {
    # The rootfs as the image packed it (FILE_ROOTFS): busybox's tar reads xz itself; zstd (a
    # product that unpacks in seconds what takes xz minutes) comes from the zstd recipe.
    # sh has no pipefail: a zstd that fails leaves a mark, as tar may still end well.
    case "$1" in
        *.zst)
            rm -f /tmp/unpack.failed
            { zstd -dcq -- "$1" || : > /tmp/unpack.failed; } | tar -xf - -C "$2" \
                && [ ! -e /tmp/unpack.failed ] ;;
        *) tar -xJf "$1" -C "$2" ;;
    esac
}

mount_boot() {
    is_mounted "$BOOT" || step mount -t "$BOOT_FSTYPE" "$BOOT_DEV" "$BOOT"
}

wait_for() {
    i=0
    while [ ! -b "$1" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ -b "$1" ] || fail "$1 did not appear"
}

partition() {
    table=$(sfdisk -d "$DISK" 2>>"$LOG") || fail "cannot read the partition table of $DISK"
    if echo "$table" | grep -q "^${DISK}$ROOTFS_NUMBER : start= *$ROOTFS_START," \
        && echo "$table" | grep -q "^${DISK}$SWAP_NUMBER : start= *$SWAP_START," \
        && echo "$table" | grep -q "^${DISK}$DATA_NUMBER : start= *$DATA_START,"; then
        log "partition table already complete"
        return
    fi
    boot_line=$(echo "$table" | grep "^${DISK}$BOOT_NUMBER :") || fail "no $BOOT_DEV in the table"
    boot_size=$(echo "$boot_line" | sed -n 's/.*size= *\([0-9]*\).*/\1/p')
    phase install-partition
    log "writing the partition table ($BOOT_DEV keeps $boot_size sectors)"
    # Nothing on the disk may be mounted, so the kernel re-reads the new table at once.
    umount "$BOOT" 2>/dev/null
    sfdisk --wipe never "$DISK" >> "$LOG" 2>&1 <<TABLE || fail "sfdisk failed"
label: dos
label-id: $DISK_ID
unit: sectors

${DISK}$BOOT_NUMBER : start=$BOOT_START, size=$boot_size, type=$BOOT_TYPE, bootable
${DISK}$ROOTFS_NUMBER : start=$ROOTFS_START, size=$ROOTFS_SECTORS, type=$ROOTFS_TYPE
${DISK}$SWAP_NUMBER : start=$SWAP_START, size=$SWAP_SECTORS, type=$SWAP_TYPE
${DISK}$DATA_NUMBER : start=$DATA_START, type=$DATA_TYPE
TABLE
    blockdev --rereadpt "$DISK" 2>/dev/null
    for n in $ROOTFS_NUMBER $SWAP_NUMBER $DATA_NUMBER; do wait_for "${DISK}$n"; done
    sync
}

provision() {
    # Passwords given at installation (provision.sh): the resulting hashes are kept on sda2,
    # so the fresh rootfs of a later update gets them too; the file itself is overwritten
    # and deleted, so the secret does not stay on sda1. Bad input stops the install with the
    # file and key in the log.
    conf="$BOOT/provision.conf" kept=$KEPT
    if [ -f "$conf" ]; then
        # umask: the hashes are never readable by others, not even for a moment.
        why=$(umask 077; provision_hashes "$conf" 2>&1 > "$kept.new") || { rm -f "$kept.new"; fail "$why"; }
        chmod 600 "$kept.new" && sync && mv "$kept.new" "$kept" && sync || fail "cannot write $kept"
        shred -u "$conf" 2>> "$LOG" || rm -f "$conf"
        sync
        log "provisioned the passwords of: $(cut -d: -f1 "$kept" | tr '\n' ' ')(from $conf, now deleted)"
    fi
    [ -s "$kept" ] || [ -d "$ACCOUNTS" ] || return 0
    step mount -t ext4 "$ROOTFS_DEV" /mnt/sda3
    if [ -s "$kept" ]; then
        shadow_apply "$kept" /mnt/sda3/etc/shadow || fail "cannot apply the provisioned passwords to /etc/shadow"
    fi
    add_accounts
    sync
    step umount /mnt/sda3
}

add_accounts() {
    # The apps' own users and groups that the old image had (see keep_passwords), added to
    # the new rootfs (mounted on /mnt/sda3) unless it has an entry of that name already.
    [ -d "$ACCOUNTS" ] || return 0
    for f in passwd group shadow; do
        [ -f "$ACCOUNTS/$f" ] || continue
        mode=644; [ $f = shadow ] && mode=600
        awk -F: 'NR == FNR { have[$1] = 1; print; next } !($1 in have)' \
            /mnt/sda3/etc/$f "$ACCOUNTS/$f" > /mnt/sda3/etc/$f.new \
            && chmod $mode /mnt/sda3/etc/$f.new && mv /mnt/sda3/etc/$f.new /mnt/sda3/etc/$f \
            || fail "cannot add the kept accounts to /etc/$f"
    done
    log "accounts carried over: $(cut -d: -f1 "$ACCOUNTS/passwd" 2>/dev/null | tr '\n' ' ')"
}

install() {
    log "install of image $(cat "$BOOT/$FILE_LABEL" 2>/dev/null) started"
    mount_boot
    (cd "$BOOT" && sha256sum -c "$FILE_SUMS") >> "$LOG" 2>&1 || fail "$BOOT_DEV content does not match its checksums"
    partition
    mount_boot
    step mkfs.ext4 -F -q -L rootfs -E lazy_itable_init=1,lazy_journal_init=1 "$ROOTFS_DEV"
    step mkswap -L swap "$SWAP_DEV"
    phase install-data
    if tune2fs -l "$DATA_DEV" >/dev/null 2>&1; then
        log "$DATA_DEV holds a filesystem: keeping it"
        e2fsck -p "$DATA_DEV" >> "$LOG" 2>&1
        [ $? -le 1 ] || fail "e2fsck $DATA_DEV found errors it could not fix"
    else
        step mkfs.ext4 -F -q -L data -E lazy_itable_init=1,lazy_journal_init=1 "$DATA_DEV"
    fi
    mkdir -p /mnt/sda3 /mnt/sda2
    step mount -t ext4 "$ROOTFS_DEV" /mnt/sda3
    phase install-unpack
    step unpack "$BOOT/$FILE_ROOTFS" /mnt/sda3
    sync
    step umount /mnt/sda3
    step mount -t ext4 "$DATA_DEV" /mnt/sda2
    mkdir -p /mnt/sda2/log/core_dumps /mnt/sda2/apps /mnt/sda2/etc
    # An install that follows an update: the staged file has served.
    [ -e "$STAGED" ] && { log "removing the applied update $STAGED"; rm -f "$STAGED"; sync; }
    provision
    switch_to_normal
}

switch_to_normal() {
    boot_mode normal || fail "cannot switch the boot to normal"
    # Only now: a cut before this line resumes the install at the next boot.
    rm -f "$BOOT/$FILE_PENDING"; sync
}

keep_passwords() {
    # The new image's rootfs has the default passwords: carry root's and admin's current ones
    # (changed with passwd, or provisioned) over to its install through $KEPT. A rootfs that
    # cannot be read keeps what $KEPT already holds.
    mkdir -p /mnt/sda3 /mnt/sda2/etc
    if ! mount -t ext4 -o ro "$ROOTFS_DEV" /mnt/sda3 2>> "$LOG"; then
        log "cannot read the old rootfs: its passwords are not carried over"
        return 0
    fi
    # umask: the hashes are never readable by others, not even for a moment.
    (umask 077; awk -F: '($1 == "root" || $1 == "admin") && $2 != "" { print $1 ":" $2 }' \
        /mnt/sda3/etc/shadow > "$KEPT.new")
    keep_accounts
    umount /mnt/sda3
    if [ -s "$KEPT.new" ]; then
        chmod 600 "$KEPT.new" && sync && mv "$KEPT.new" "$KEPT" && sync || fail "cannot write $KEPT"
        log "the passwords of $(cut -d: -f1 "$KEPT" | tr '\n' ' ')are carried over to the new image"
    else
        rm -f "$KEPT.new"
    fi
}

keep_accounts() {
    # Users and groups made on the device for apps (useradd: ids 1001..59999) live in
    # the old rootfs's files: copy them to $ACCOUNTS on sda2, whole or not at all.
    rm -rf "$ACCOUNTS.new" && mkdir -p "$ACCOUNTS.new" && chmod 700 "$ACCOUNTS.new" || fail "cannot write $ACCOUNTS.new"
    awk -F: '$3 >= 1001 && $3 < 60000' /mnt/sda3/etc/passwd > "$ACCOUNTS.new/passwd"
    awk -F: '$3 >= 1001 && $3 < 60000' /mnt/sda3/etc/group > "$ACCOUNTS.new/group"
    (umask 077; awk -F: 'NR == FNR { app[$1] = 1; next } ($1 in app)' \
        "$ACCOUNTS.new/passwd" /mnt/sda3/etc/shadow > "$ACCOUNTS.new/shadow")
    sync && rm -rf "$ACCOUNTS" && mv "$ACCOUNTS.new" "$ACCOUNTS" && sync || fail "cannot write $ACCOUNTS"
}

manifest_value() { sed -n "s/^$1=//p" /tmp/update.manifest; }

abandon() {
    # The staged update cannot be applied: drop it and go back to the old image (the manual:
    # "The App Platform now either applies the image update or it reboots into the old image").
    log "ERROR: $*: the update is abandoned, the old image stays"
    rm -f "$STAGED"; sync
    mount_boot && boot_mode normal
    log "rebooting into the old image"
    save_log
    sync
    [ "${NO_REBOOT:-}" = 1 ] || reboot -f
    exit 1
}

update() {
    mkdir -p /mnt/sda2
    is_mounted /mnt/sda2 || step mount -t ext4 "$DATA_DEV" /mnt/sda2
    [ -f "$STAGED" ] || fail "no update staged in $STAGED"
    mount_boot
    tar -xOf "$STAGED" update.manifest > /tmp/update.manifest 2>> "$LOG" || abandon "cannot read its manifest"
    version=$(manifest_value version) size=$(manifest_value boot_size) sum=$(manifest_value boot_sha256)
    log "update from image $(cat "$BOOT/$FILE_LABEL") to $version started"
    start=$(slot_current)
    [ -n "$start" ] || fail "no $BOOT_DEV in the partition table"
    new=$(slot_other "$start")
    slot_fits "$size" || abandon "its $BOOT_DEV does not fit"
    keep_passwords
    umount "$BOOT" || fail "cannot unmount $BOOT"
    phase update-write
    log "writing the new $BOOT_DEV ($size bytes) at sector $new (the current one starts at $start)"
    tar -xOf "$STAGED" boot.img | slot_write "$new" "$size" "$sum" 2>> "$LOG" \
        || abandon "writing the new $BOOT_DEV failed or it reads back wrong"
    phase update-switch
    log "switching partition $BOOT_NUMBER to the new $BOOT_DEV (image $version)"
    save_log
    # One sector: before it the old image runs the update again, after it the new one installs.
    slot_switch "$new" "$size" >> "$LOG" 2>&1 || fail "sfdisk could not switch $BOOT_DEV"
    sync
    log "image $version is in place; its rescue system installs it at the next boot"
    save_log
}

resize() {
    is_mounted /mnt/sda2 && fail "$DATA_DEV is mounted: boot the rescue/setup entry first"
    umount "$BOOT" 2>/dev/null
    before=$(cat "/sys/class/block/${DISK#/dev/}$DATA_NUMBER/size" 2>/dev/null)
    log "growing $DATA_DEV to the end of the disk ($before sectors now)"
    echo ", +" | sfdisk --no-reread -N "$DATA_NUMBER" "$DISK" >> "$LOG" 2>&1 || fail "sfdisk -N $DATA_NUMBER failed"
    blockdev --rereadpt "$DISK" >> "$LOG" 2>&1 || fail "the kernel did not take the new table"
    wait_for "$DATA_DEV"
    log "$DATA_DEV has $(cat "/sys/class/block/${DISK#/dev/}$DATA_NUMBER/size") sectors"
    e2fsck -f -y "$DATA_DEV" >> "$LOG" 2>&1
    [ $? -le 1 ] || fail "e2fsck $DATA_DEV found errors it could not fix"
    step resize2fs "$DATA_DEV"
    mkdir -p /mnt/sda2 && mount -t ext4 "$DATA_DEV" /mnt/sda2
}

: > "$LOG" || exit 1
case "$ACTION" in
    install) install ;;
    resize) resize ;;
    update)
        update
        sync
        [ "${NO_REBOOT:-}" = 1 ] || reboot -f
        exit 0 ;;
    *) fail "unknown action '$ACTION' (install, update or resize)" ;;
esac
echo "finished" >> "$LOG"   # the manual's marker: the very last line, exactly this
echo "finished"
save_log
sync
[ "${NO_REBOOT:-}" = 1 ] || reboot -f
