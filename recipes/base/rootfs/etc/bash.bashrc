# Interactive shells that are not login shells ("su root" from admin) get what login shells
# get from /etc/profile: the prompt (# for root, $ for everyone else), PATH, PAGER.
. /etc/profile
