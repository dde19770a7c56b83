#!/usr/bin/env bash
# Linker wrapper (set as `linker` in .cargo/config.toml): links with `cc`, but first replaces
# every `libpg_query-*.rlib` argument by a copy in which all global symbols defined by the
# bundled C objects, except the `pg_query*` API the Rust side calls, carry a private prefix.
#
# Why: libpg_query contains its own copies of about 400 PostgreSQL internals (palloc, errstart,
# CurrentMemoryContext, ...). Without renaming, the static link binds pgrx's references to those
# copies instead of the server's, and the backend segfaults on its first SPI call.
# The Rust objects (*.rcgu.o) and lib.rmeta are left out of the rename map: they only call the
# pg_query* API. `tests/scripts/check-symbols.sh` fails if palloc is ever defined again.
set -euo pipefail

prefix=optidb_pgq_
linker=${OPTIDB_REAL_LINKER:-cc}

isolate() {
    local rlib=$1
    local outdir
    outdir="$(dirname "$rlib")/../pg_query-isolated"
    local out
    out="$outdir/$(basename "$rlib")"
    if [[ -f $out && $out -nt $rlib && $out -nt ${BASH_SOURCE[0]} ]]; then
        echo "$out"
        return
    fi
    mkdir -p "$outdir"
    local work
    work=$(mktemp -d)
    (
        cd "$work"
        ar x "$rlib"
        mapfile -t cobjs < <(ar t "$rlib" | grep -E '\.o$' | grep -vE '\.rcgu\.o$' | sort -u)
        nm -g --defined-only -P "${cobjs[@]}" 2>/dev/null |
            awk -v p="$prefix" 'NF >= 2 && $1 !~ /:$/ && $1 !~ /^pg_query/ { print $1 " " p $1 }' |
            sort -u >map
        [[ -s map ]] || { echo "link wrapper: no C symbols found in $rlib" >&2; exit 1; }
        for o in "${cobjs[@]}"; do objcopy --redefine-syms=map "$o"; done
        cp "$rlib" out.rlib
        ar r out.rlib "${cobjs[@]}"
        ranlib out.rlib 2>/dev/null || true
        mv out.rlib "$out.tmp.$$"
        mv "$out.tmp.$$" "$out"
    )
    rm -rf "$work"
    echo "$out"
}

args=()
for a in "$@"; do
    case $a in
    *libpg_query-*.rlib) args+=("$(isolate "$a")") ;;
    @*)
        # rustc passes a response file when the command line is long.
        rsp=${a#@}
        while IFS= read -r line; do
            case $line in
            *libpg_query-*.rlib) isolate "$line" >/dev/null ;;
            esac
        done <"$rsp"
        sed -E -i 's#^(.*/)(deps/)(libpg_query-[^/]*\.rlib)$#\1pg_query-isolated/\3#' "$rsp"
        args+=("$a")
        ;;
    *) args+=("$a") ;;
    esac
done
exec "$linker" "${args[@]}"
