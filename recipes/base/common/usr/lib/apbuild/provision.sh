# shellcheck shell=sh
# Passwords given at installation instead of the defaults (docs/user-guide.md,
# "Provisioning"): provision.conf on sda1, KEY=VALUE lines read as data (never run). The
# installer (install_step1.sh) keeps the hashes on sda2 and applies them to each rootfs it
# unpacks; the tests run these functions on the build host.

# provision_hashes CONF: the "root:HASH" and "admin:HASH" lines CONF gives, on stdout. A
# plain password is hashed here (SHA-512 crypt, a fresh salt) and never printed. Bad input:
# one line on stderr naming the file and the line or key, status 1, nothing on stdout.
provision_hashes() {
    _conf=$1 _root_hash="" _admin_hash="" _root_pw="" _admin_pw="" _n=0
    while IFS= read -r _line || [ -n "$_line" ]; do
        _n=$((_n + 1))
        _line=$(printf '%s' "$_line" | tr -d '\r')
        case "$_line" in ""|"#"*) continue ;; esac
        _key=${_line%%=*} _value=${_line#*=}
        if [ "$_key" = "$_line" ]; then echo "$_conf line $_n: not KEY=VALUE" >&2; return 1; fi
        case "$_value" in \"*\"|\'*\') _value=${_value#?}; _value=${_value%?} ;; esac
        if [ -z "$_value" ]; then echo "$_conf: $_key is empty" >&2; return 1; fi
        case "$_key" in
            ROOT_PASSWORD) _root_pw=$_value ;;
            ADMIN_PASSWORD) _admin_pw=$_value ;;
            ROOT_PASSWORD_HASH|ADMIN_PASSWORD_HASH)
                # shellcheck disable=SC2016  # the literal prefixes of crypt hashes
                case "$_value" in
                    *:*) echo "$_conf: $_key must not contain ':'" >&2; return 1 ;;
                    '$6$'*|'$5$'*) ;;
                    *) echo "$_conf: $_key is not a SHA-512 or SHA-256 crypt hash (\$6\$... or \$5\$...)" >&2
                       return 1 ;;
                esac
                if [ "$_key" = ROOT_PASSWORD_HASH ]; then _root_hash=$_value; else _admin_hash=$_value; fi ;;
            *) echo "$_conf: unknown key $_key (ROOT_PASSWORD, ADMIN_PASSWORD, ROOT_PASSWORD_HASH, ADMIN_PASSWORD_HASH)" >&2
               return 1 ;;
        esac
    done < "$_conf"
    # The manual: the global admin password replaces both defaults unless root gets its own.
    [ -z "$_root_pw$_root_hash" ] && _root_pw=$_admin_pw
    if [ -n "$_admin_pw" ]; then
        _admin_hash=$(printf '%s\n' "$_admin_pw" | mkpasswd -m sha512 -P 0) || _admin_hash=""
        if [ -z "$_admin_hash" ]; then echo "$_conf: cannot hash ADMIN_PASSWORD" >&2; return 1; fi
    fi
    if [ -n "$_root_pw" ]; then
        _root_hash=$(printf '%s\n' "$_root_pw" | mkpasswd -m sha512 -P 0) || _root_hash=""
        if [ -z "$_root_hash" ]; then echo "$_conf: cannot hash ROOT_PASSWORD" >&2; return 1; fi
    fi
    [ -z "$_root_hash" ] && _root_hash=$_admin_hash
    if [ -z "$_root_hash$_admin_hash" ]; then echo "$_conf sets no password" >&2; return 1; fi
    if [ -n "$_root_hash" ]; then echo "root:$_root_hash"; fi
    if [ -n "$_admin_hash" ]; then echo "admin:$_admin_hash"; fi
}

# shadow_apply KEPT SHADOW: SHADOW's hash fields for the users KEPT lists ("user:hash"
# lines) replaced, the other lines as they were; written aside (mode 600), then renamed.
shadow_apply() {
    awk -F: -v OFS=: 'NR == FNR { hash[$1] = $2; next } ($1 in hash) { $2 = hash[$1] } 1' \
        "$1" "$2" > "$2.new" && chmod 600 "$2.new" && mv "$2.new" "$2"
}
