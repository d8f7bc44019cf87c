# Interactive shells that are not login shells ("su root" from admin) get the same prompt
# as login shells: # for root, $ for everyone else.
PS1='\u@\h:\w\$ '
[ "$(id -u)" = 0 ] && PS1='\h:\w# '
