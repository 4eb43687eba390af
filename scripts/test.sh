#!/usr/bin/env bash
# Installs everything the tests need and runs every test:
#   1. system packages the integration tests use (nginx; ss from iproute2; systemd's tools; openssl;
#      curl, and h2load from nghttp2-client),
#      via apt-get when missing and root;
#   2. a virtualenv .venv (reused when present) with ferrocorn built from this checkout
#      (release build of the Rust extension) and tests/requirements.txt;
#   3. the Rust unit tests (cargo test);
#   4. the linters (rustfmt, clippy, ruff);
#   5. the integration suite (pytest tests), with .venv/bin first on PATH;
#   6. for each other CPython pyproject.toml claims (OTHER_PYTHONS, default 3.9 3.10 3.12 3.13),
#      a virtualenv .venv-X.Y with ferrocorn built for that interpreter and a representative part
#      of the suite (VERSION_TESTS);
#   7. each cargo-fuzz target for FUZZ_SECONDS (default 30) s (fuzz/run.sh);
#   8. the Autobahn WebSocket suite (cases 1-7, 10, 12, 13) against `ferrocorn -k asgi` with an
#      echo app, started in the background after pytest and collected last, within
#      AUTOBAHN_SECONDS (default 1800) s; its wstest runs on pyenv's Python 2.7.
# Exits non-zero if any of them fails (a fuzz crash, an Autobahn case not OK or INFORMATIONAL, a
# missing Python 2.7 included); all always run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

log() { printf '\n==> %s\n' "$*"; }

have_nginx() { PATH="$PATH:/usr/sbin:/sbin" command -v nginx >/dev/null 2>&1; }

missing=()
have_nginx || missing+=(nginx)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
# tests/test_deploy.py: systemd-analyze and systemd-socket-activate; a TLS certificate for nginx.
command -v systemd-socket-activate >/dev/null 2>&1 || missing+=(systemd)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# tests/test_tls.py and tests/test_http2.py: curl as a TLS and HTTP/2 client; h2load.
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "missing system packages: ${missing[*]} (install them, or run this as root on Debian/Ubuntu)" >&2
        exit 1
    fi
fi

venv="$root/.venv"
if [[ ! -x $venv/bin/python ]]; then
    log "creating $venv"
    python3 -m venv "$venv"
fi
export PATH="$venv/bin:$PATH:/usr/sbin:/sbin"
export PIP_DISABLE_PIP_VERSION_CHECK=1

log "installing ferrocorn (release build) and the test requirements"
python -m pip install -q -r tests/requirements.txt
python -m pip install -q --force-reinstall --no-deps .

status=0

log "cargo test"
PYO3_PYTHON="$venv/bin/python" cargo test || status=1

log "lint (rustfmt, clippy, ruff)"
cargo fmt --check || status=1
PYO3_PYTHON="$venv/bin/python" cargo clippy --all-targets --quiet -- -D warnings || status=1
ruff check python tests examples || status=1

log "pytest"
python -m pytest -v tests || status=1

# Mostly the suite's own CPU (wstest is Python 2): it runs beside the stages below.
autobahn_seconds=${AUTOBAHN_SECONDS:-1800}
autobahn_log=$(mktemp -t ferrocorn-autobahn.XXXXXX)
log "Autobahn WebSocket suite: started in the background (results at the end)"
timeout --kill-after=30 "$((autobahn_seconds + 600))" \
    python tests/autobahn/run.py --agent ferrocorn-asgi --timeout "$autobahn_seconds" \
    --serve "$venv/bin/ferrocorn -k asgi -b 127.0.0.1:{port} --chdir $root/tests/apps --log-level warning ws_apps:echo" \
    >"$autobahn_log" 2>&1 &
autobahn_pid=$!

# The interpreters are found through pyenv (`pyenv prefix X.Y`, then any X.Y.* under
# `pyenv root`), else as pythonX.Y on PATH; a missing one fails the run with a message saying so.
read -ra OTHER_PYTHONS <<<"${OTHER_PYTHONS-3.9 3.10 3.12 3.13}"
# What depends on the interpreter: the WSGI call and environ, app and config loading, the
# frameworks, the embedding API. HTTP parsing and process management are Rust and are covered by
# the whole suite above.
VERSION_TESTS=(tests/test_wsgi.py tests/test_cli.py tests/test_frameworks.py tests/test_embedding.py tests/test_asgi.py)

find_python() {
    local version=$1 prefix candidate
    if command -v pyenv >/dev/null 2>&1; then
        if prefix=$(pyenv prefix "$version" 2>/dev/null) && [[ -x $prefix/bin/python$version ]]; then
            echo "$prefix/bin/python$version"
            return
        fi
        for candidate in "$(pyenv root)/versions/$version".*/bin/python"$version"; do
            [[ -x $candidate ]] && prefix=$candidate
        done
        if [[ -n ${prefix:-} && -x $prefix ]]; then
            echo "$prefix"
            return
        fi
    fi
    command -v "python$version"
}

for version in "${OTHER_PYTHONS[@]}"; do
    log "CPython $version: build and ${VERSION_TESTS[*]}"
    if ! interpreter=$(find_python "$version"); then
        echo "CPython $version not found (tried pyenv prefix $version, \$(pyenv root)/versions/$version.*," \
            "python$version on PATH): install it, e.g. with 'pyenv install $version'" >&2
        status=1
        continue
    fi
    other="$root/.venv-$version"
    [[ -x $other/bin/python ]] || "$interpreter" -m venv "$other"
    # Built without cross-crate LTO: the same code, compiled in a fraction of the time a fat-LTO
    # link per interpreter would take.
    if "$other/bin/python" -m pip install -q -r tests/requirements.txt &&
        CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
            "$other/bin/python" -m pip install -q --force-reinstall --no-deps .; then
        PATH="$other/bin:$PATH" "$other/bin/python" -m pytest -q -p no:cacheprovider \
            "${VERSION_TESTS[@]}" || status=1
    else
        echo "building ferrocorn for CPython $version failed" >&2
        status=1
    fi
done

log "fuzz (${FUZZ_SECONDS:-30} s per target)"
fuzz/run.sh "${FUZZ_SECONDS:-30}" || status=1

log "Autobahn WebSocket suite (cases 1-7, 10, 12, 13 against -k asgi)"
autobahn_status=0
wait "$autobahn_pid" || autobahn_status=$?
cat "$autobahn_log"
rm -f "$autobahn_log"
if ((autobahn_status == 124 || autobahn_status == 137)); then
    echo "the Autobahn suite did not finish within $((autobahn_seconds + 600)) s" >&2
fi
((autobahn_status == 0)) || status=1

exit "$status"
