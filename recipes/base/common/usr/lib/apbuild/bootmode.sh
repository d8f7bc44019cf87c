# shellcheck shell=sh
# What the next boot starts: the installed system ("normal") or the rescue system
# ("rescue"), for both kinds of board. GRUB boots its default entry (0 rescue, 1 normal);
# a gateway's loader reads the bootmode file on sda1. Either switch is one rename.
# Sourced after /etc/apbuild/device.conf (BOOTLOADER, BOOT_MOUNT, FILE_MODE).

# boot_mode normal|rescue
boot_mode() {
    case "$BOOTLOADER:$1" in
        grub-bios:normal) from=0 to=1 ;;
        grub-bios:rescue) from=1 to=0 ;;
        gateway:normal | gateway:rescue) ;;
        *)
            echo "boot_mode: '$1' is not normal or rescue (bootloader $BOOTLOADER)" >&2
            return 1 ;;
    esac
    if [ "$BOOTLOADER" = grub-bios ]; then
        cfg="$BOOT_MOUNT/grub/grub.cfg"
        sed "s/^set default=$from\$/set default=$to/" "$cfg" > "$cfg.new" && sync && mv "$cfg.new" "$cfg" && sync
    else
        mode="$BOOT_MOUNT/$FILE_MODE"
        echo "$1" > "$mode.new" && sync && mv "$mode.new" "$mode" && sync
    fi
}
