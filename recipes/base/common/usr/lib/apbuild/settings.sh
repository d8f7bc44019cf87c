# shellcheck shell=sh
# settings.sh: the settings a reader stores with setip, setdns and setntp (the manager's
# network, DNS and NTP servers). Each is a file of KEY=value lines on sda2, so it survives
# updates; it is read as data and never run (a hand-edited file cannot run a command), and
# written whole or not at all (a cut leaves the old file or the new one).
#
#   . /usr/lib/apbuild/settings.sh
#   setting_store /mnt/sda2/etc/dns.conf "# a comment line" "DNS1=192.0.2.53" "DNS2="
#   dns1=$(setting_value /mnt/sda2/etc/dns.conf DNS1)

# setting_value FILE KEY: the last value stored for KEY, quotes around it removed; empty
# when FILE or KEY is absent.
setting_value() {
    [ -f "$1" ] || return 0
    sed -n "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*//p" "$1" | tail -n 1 |
        sed -e 's/[[:space:]]*$//' -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'\$/\1/"
}

# setting_store FILE LINE...: FILE holds these lines, flushed to the disk before and after
# the rename that replaces the old file.
setting_store() {
    _setting_file=$1
    shift
    mkdir -p "$(dirname "$_setting_file")" && printf '%s\n' "$@" > "$_setting_file.new" &&
        sync && mv "$_setting_file.new" "$_setting_file" && sync
}

# one_line VALUE: fails for a value of several lines. Checks that run grep on a value pass
# one whose first line is good, and a stored second line would be a setting of its own.
one_line() {
    case "$1" in *'
'*) return 1 ;; esac
}

# is_ipv4 VALUE: four decimal octets 0-255, nothing else.
is_ipv4() {
    one_line "$1" && echo "$1" |
        grep -Eq '^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$'
}
