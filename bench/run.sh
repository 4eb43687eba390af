#!/usr/bin/env bash
# One command for the whole benchmark:
#   1. Debian packages wrk and h2load (load generators; h2load is in nghttp2-client), nginx (a TLS
#      front for ferrocorn) and libev-dev (needed to build bjoern), installed with apt-get when
#      missing and running as root;
#   2. a virtualenv bench/.venv (reused when present) with the peer servers, Flask, matplotlib and
#      ferrocorn built from this checkout (release build of the Rust extension);
#   3. the WebSocket load client bench/wsload, built with cargo (release) when cargo is there;
#   4. bench/run.py with every argument passed through (--quick, --only, --servers, --runs, ...).
# A peer that fails to install is left out here and reported as "not installed" in the results.
# Set BENCH_SKIP_SETUP=1 to reuse an existing bench/.venv without touching it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
venv="$root/bench/.venv"

log() { printf '==> %s\n' "$*" >&2; }

if [[ ${BENCH_SKIP_SETUP:-0} != 1 ]]; then
    missing=()
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
    PATH="$PATH:/usr/sbin:/sbin" command -v nginx >/dev/null 2>&1 || missing+=(nginx)
    dpkg -s libev-dev >/dev/null 2>&1 || missing+=(libev-dev)
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
    command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
    command -v ss >/dev/null 2>&1 || missing+=(iproute2)
    if ((${#missing[@]})); then
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            log "installing ${missing[*]}"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends "${missing[@]}"
        else
            echo "missing system packages: ${missing[*]} (install them, or run this as root on Debian/Ubuntu)" >&2
            command -v wrk >/dev/null 2>&1 || exit 1
        fi
    fi

    if [[ ! -x $venv/bin/python ]]; then
        log "creating $venv"
        python3 -m venv "$venv"
    fi
    export PIP_DISABLE_PIP_VERSION_CHECK=1
    pip=("$venv/bin/python" -m pip install -q)

    log "installing gunicorn (with h2 for its HTTP/2), flask, fastapi, matplotlib, uvicorn (httptools, uvloop)"
    "${pip[@]}" "gunicorn==27.0.1" h2 flask fastapi matplotlib uvicorn httptools uvloop
    # Each peer separately: one that fails to build must not stop the others.
    for peer in granian uwsgi bjoern "uvicorn[standard]" "hypercorn[uvloop]"; do
        log "installing $peer"
        "${pip[@]}" "$peer" || log "WARNING: $peer failed to install; it is reported as not installed"
    done

    log "installing ferrocorn from this checkout (release build with LTO)"
    "${pip[@]}" --force-reinstall --no-deps "$root"

    # The WebSocket echo scenario needs it; without cargo that scenario is reported as skipped.
    if command -v cargo >/dev/null 2>&1; then
        log "building the WebSocket load client bench/wsload"
        cargo build --quiet --release --manifest-path "$root/bench/wsload/Cargo.toml" \
            || log "WARNING: bench/wsload failed to build; the WebSocket scenario is skipped"
    else
        log "WARNING: cargo is missing: bench/wsload is not built and the WebSocket scenario is skipped"
    fi
fi

export PATH="$venv/bin:$PATH"
exec "$venv/bin/python" "$root/bench/run.py" "$@"
