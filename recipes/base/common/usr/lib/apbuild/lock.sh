# shellcheck shell=sh
# lock.sh: one holder at a time of a named lock, for a device script that two callers may run
# at once (the manager's loop and a reader's command). busybox has no flock, so the lock is a
# file made by a hard link, which the kernel makes or refuses atomically, holding the
# holder's pid from its first instant. A holder removes it before it exits (its EXIT trap);
# one killed with SIGKILL cannot, and its lock is taken over once its pid is gone. /run is a
# tmpfs: a reboot frees every lock.
#
#   . /usr/lib/apbuild/lock.sh
#   lock_take /run/replication/check.lock     # waits; given back when this shell exits
#   lock_try /run/update-feed.lock || die "another update-feed is running"    # does not wait
#
# Both set an EXIT trap that gives the lock back; a caller that sets its own EXIT trap
# afterwards calls lock_give in it.
#
# The one race left needs a holder killed with SIGKILL: two waiters that both saw it dead,
# and a third that takes the lock while the second puts back the first's, may hold it at once.

# lock_take FILE: wait until this shell holds FILE; an EXIT trap (and INT, TERM, HUP)
# gives it back. A background subshell does not inherit the trap, nor hold the lock.
lock_take() {
    _lock=$1
    echo $$ > "$_lock.$$" || return 1
    until _lock_once; do
        sleep 0.1
    done
    _lock_held
}

# lock_try FILE: take FILE now if it is free or its holder is dead (as lock_take); status 1,
# and nothing held, while a live holder has it.
lock_try() {
    _lock=$1
    echo $$ > "$_lock.$$" || return 1
    if _lock_once; then
        _lock_held
        return 0
    fi
    rm -f "$_lock.$$"
    return 1
}

# lock_give: give back the lock this shell holds (for a caller's own EXIT trap).
lock_give() {
    rm -f "$_lock"
}

# One attempt at $_lock with $_lock.$$ (this shell's pid, written): status 0 when taken.
_lock_once() {
    ln "$_lock.$$" "$_lock" 2>/dev/null && return 0
    _holder=$(cat "$_lock" 2>/dev/null)
    # Its pid gone (/proc, not kill -0: a caller that may not signal it must not think it
    # dead) and the lock still naming it: a holder that finished would have removed it.
    if [ -n "$_holder" ] && [ ! -d "/proc/$_holder" ] && [ "$(cat "$_lock" 2>/dev/null)" = "$_holder" ] \
            && mv "$_lock" "$_lock.dead.$$" 2>/dev/null; then
        # Another waiter broke it first and holds the lock now: that lock goes back.
        [ "$(cat "$_lock.dead.$$")" = "$_holder" ] || ln "$_lock.dead.$$" "$_lock" 2>/dev/null
        rm -f "$_lock.dead.$$"
        ln "$_lock.$$" "$_lock" 2>/dev/null && return 0
    fi
    return 1
}

_lock_held() {
    rm -f "$_lock.$$"
    # shellcheck disable=SC2064  # the file's name now, not at exit
    trap "rm -f '$_lock'" EXIT
    trap 'exit 1' INT TERM HUP
}
