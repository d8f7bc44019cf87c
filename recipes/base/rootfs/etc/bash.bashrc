# Interactive shells that are not login shells ("su root" from admin) get what login shells
# get from /etc/profile: the prompt (# for root, $ for everyone else), PATH, PAGER.
# shellcheck source=/dev/null  # /etc/profile: checked on its own
. /etc/profile
