#!/usr/bin/env bash
# Debian's own PostgreSQL of a newer major, on this bookworm machine: a chroot of the Debian
# release that packages it (trixie: 17, sid: 18) with that release's postgresql-NN,
# postgresql-NN-hypopg and postgresql-NN-cron. Their binaries need the newer glibc of that
# release, so they run only inside the chroot; the chroot shares the host's network namespace
# and /tmp, so a server started inside listens on sockets under /tmp and on loopback TCP that
# the host's clients (psql, psycopg, pytest) reach directly.
#
#   debian-chroot.sh cache NN        only the cached tarball (test-all.sh makes it in the
#                                    background while it compiles)
#   debian-chroot.sh prepare NN      a chroot at $OPTIDB_CHROOTS/<release> without optidb:
#                                    unpacked from the cached <release>.tar (made on the first
#                                    run: debootstrap --variant=minbase, about a minute, then apt
#                                    inside), or the tree unpacked from it before with
#                                    optidb-postgresql-NN purged; prints its path
#   debian-chroot.sh with NN CMD...  runs CMD (on the host side) in a private mount namespace in
#                                    which the chroot has /proc, /dev, /sys and the host's /tmp,
#                                    with OPTIDB_CHROOT (its path) and OPTIDB_PG_RUN (the command
#                                    prefix that runs a program of the chroot as user postgres,
#                                    which env.sh's as_postgres uses) exported
#   debian-chroot.sh root NN CMD...  the same, CMD runs as root inside the chroot (dpkg, apt)
#
# The chroot's postgres user gets the host's uid and gid, so data directories under /tmp are
# owned alike on both sides. The repository is mounted at its own path inside as well. Services never start inside (policy-rc.d) and no main cluster is
# created: the tests start their own clusters. Settings: OPTIDB_CHROOTS (default
# /tmp/optidb-chroots), OPTIDB_DEBIAN_MIRROR (default: the mirror this machine's apt uses).
set -euo pipefail
. "$(dirname "$0")/env.sh"

chroots=${OPTIDB_CHROOTS:-/tmp/optidb-chroots}
action=${1:-}
major=${2:-}
shift 2 || die "usage: debian-chroot.sh cache|prepare|with|root 17|18 [command...]"
case "$major" in
17) release=trixie ;;
18) release=sid ;;
*) die "debian-chroot.sh: no Debian release with PostgreSQL $major on this mirror (17: trixie, 18: sid)" ;;
esac
dir=$chroots/$release
tarball=$chroots/$release.tar
packages=(postgresql-$major postgresql-$major-hypopg postgresql-$major-cron)

# Mounts live in this process's private mount namespace (unshare -m): they vanish with it and
# the host's mount table never sees them.
mount_all() {
    mount -t proc proc "$dir/proc"
    mount --rbind /dev "$dir/dev"
    mount --rbind /sys "$dir/sys"
    mount --bind /tmp "$dir/tmp"
    # The repository at its own path too: the tests' SQL files (demo schema, workload) are
    # read by psql and pgbench inside the chroot.
    mkdir -p "$dir$OPTIDB_ROOT"
    mount --bind "$OPTIDB_ROOT" "$dir$OPTIDB_ROOT"
}

# Runs "$@" in a private mount namespace with the chroot's mounts made.
in_namespace() {
    unshare -m --propagation private -- "$0" __inside "$major" "$@"
}

debootstrap_release() {
    local m
    m=$(debian_mirror)
    if ! command -v debootstrap >/dev/null; then
        log "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    log "debootstrap --variant=minbase $release from $m (about a minute)"
    rm -rf "$dir"
    mkdir -p "$chroots"
    debootstrap --variant=minbase "$release" "$dir" "$m" >"$chroots/$release-debootstrap.log" 2>&1 \
        || die "debootstrap $release failed (log: $chroots/$release-debootstrap.log)"
    cp /etc/resolv.conf "$dir/etc/resolv.conf"
    # sid's Release file on the mirror is older than its Valid-Until.
    [ "$release" != sid ] ||
        echo 'Acquire::Check-Valid-Until "false";' >"$dir/etc/apt/apt.conf.d/99optidb-valid-until"
    printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
    chmod +x "$dir/usr/sbin/policy-rc.d"
    mkdir -p "$dir/etc/postgresql-common"
    echo 'create_main_cluster = false' >"$dir/etc/postgresql-common/createcluster.conf"
    chroot "$dir" groupadd -g "$(id -g postgres)" postgres
    chroot "$dir" useradd -r -u "$(id -u postgres)" -g postgres -d /var/lib/postgresql \
        -s /bin/bash postgres
    log "$release: apt-get install ${packages[*]}"
    in_namespace __apt
    # What the tests never read stays out of the tarball: apt's downloads and caches, docs.
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/*.bin \
        "$dir"/var/lib/apt/lists/*_Packages "$dir"/usr/share/doc/* "$dir"/usr/share/man/*
    tar -C "$dir" -cf "$tarball.new" .
    mv "$tarball.new" "$tarball"
}

case "$action" in
cache)
    [ -f "$tarball" ] || debootstrap_release
    ;;
prepare)
    [ -f "$tarball" ] || debootstrap_release
    # The tree unpacked from this very tarball before is reused with optidb's package purged
    # (unpacking 600 MB again takes most of a minute on a busy machine); otherwise unpack.
    stamp=$(stat -c %Y-%s "$tarball")
    if [ "$(cat "$dir/.optidb-tarball" 2>/dev/null)" = "$stamp" ]; then
        in_namespace __root dpkg --purge "optidb-postgresql-$major" >/dev/null
    else
        rm -rf "$dir"
        mkdir -p "$dir"
        tar -C "$dir" -xf "$tarball"
        echo "$stamp" >"$dir/.optidb-tarball"
    fi
    echo "$dir"
    ;;
with | root)
    [ -x "$dir/usr/lib/postgresql/$major/bin/postgres" ] ||
        die "no prepared $release chroot at $dir (debian-chroot.sh prepare $major)"
    in_namespace "__$action" "$@"
    ;;
__inside)
    mount_all
    sub=$1
    shift
    case "$sub" in
    __apt)
        export DEBIAN_FRONTEND=noninteractive
        chroot "$dir" apt-get -qq update
        chroot "$dir" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
        ;;
    __root)
        exec chroot "$dir" "$@"
        ;;
    __with)
        export OPTIDB_CHROOT=$dir
        export OPTIDB_PG_RUN="chroot --userspec=$(id -u postgres):$(id -g postgres) $dir"
        exec "$@"
        ;;
    esac
    ;;
*) die "usage: debian-chroot.sh cache|prepare|with|root 17|18 [command...]" ;;
esac
