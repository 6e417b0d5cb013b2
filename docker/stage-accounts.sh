# Sourced by docker/build.sh and docker/etcd/build.sh: what a FROM-scratch image needs to run
# as a named non-root user, written into a staged root.
#
#   stage_accounts ROOT USER UID HOME
#
# writes ROOT/etc/passwd and ROOT/etc/group with root, USER (uid and gid UID, home HOME) and
# nobody, and ROOT/etc/nsswitch.conf with files-only users and files-then-DNS hosts: static
# glibc has both lookups built in, and Docker mounts /etc/hosts and /etc/resolv.conf into every
# container, scratch ones included.
stage_accounts() {
    local root=$1 user=$2 uid=$3 home=$4
    mkdir -p "$root/etc"
    cat > "$root/etc/passwd" <<PASSWD
root:x:0:0:root:/:/sbin/nologin
$user:x:$uid:$uid:$user:$home:/sbin/nologin
nobody:x:65534:65534:nobody:/:/sbin/nologin
PASSWD
    cat > "$root/etc/group" <<GROUP
root:x:0:
$user:x:$uid:
nogroup:x:65534:
GROUP
    cat > "$root/etc/nsswitch.conf" <<'NSS'
passwd: files
group: files
hosts: files dns
NSS
    chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
}
