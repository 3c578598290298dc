# Shared shell helpers for scripts/test and bench/run. Source it; do not run it.
# Everything here is idempotent: it installs only what is missing.

# Run a command as root (directly when we are root, else through sudo).
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Install Debian packages that are not installed yet.
apt_ensure() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "==> installing Debian packages: ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
}

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The newest installed PostgreSQL server's bin directory (Debian layout).
pg_bindir() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# Start a throwaway PostgreSQL cluster on a free loopback port; export ESTUARY_TEST_PG_URL
# and PG_TMP. Stop it with pg_stop (scripts register that as an EXIT trap).
# PG_EXTRA_OPTIONS: more server options, for profiling by hand (say
# "-c shared_preload_libraries=pg_stat_statements").
pg_start() {
    apt_ensure postgresql
    local bindir; bindir=$(pg_bindir)
    [ -x "$bindir/initdb" ] || { echo "PostgreSQL server binaries not found under /usr/lib/postgresql" >&2; return 1; }
    PG_TMP=$(mktemp -d /tmp/estuary-pg.XXXXXX)
    PG_PORT=$(free_port)
    local run=()
    # PostgreSQL refuses to run as root; use its own system user then.
    if [ "$(id -u)" = 0 ]; then
        chown postgres "$PG_TMP"
        run=(runuser -u postgres --)
    fi
    "${run[@]}" "$bindir/initdb" -D "$PG_TMP/data" -U postgres -A trust -E UTF8 --no-sync >"$PG_TMP/initdb.log" 2>&1 \
        || { cat "$PG_TMP/initdb.log" >&2; return 1; }
    # fsync off: this cluster is thrown away; crash tests kill Estuary, not PostgreSQL.
    "${run[@]}" "$bindir/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/server.log" -w -t 60 \
        -o "-p $PG_PORT -k $PG_TMP -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 ${PG_EXTRA_OPTIONS:-}" start >/dev/null \
        || { cat "$PG_TMP/server.log" >&2; return 1; }
    export ESTUARY_TEST_PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    export PG_TMP PG_BINDIR="$bindir"
    echo "==> PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT ($PG_TMP)"
}

pg_stop() {
    [ -n "${PG_TMP:-}" ] && [ -d "$PG_TMP/data" ] || return 0
    local run=()
    [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
    "${run[@]}" "$PG_BINDIR/pg_ctl" -D "$PG_TMP/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_TMP"
}

# Create (or update) the repo's Python venv for interop tests: .venv with
# tests/interop/requirements.txt. Exports ESTUARY_TEST_PYTHON.
venv_ensure() {
    local venv=.venv req=tests/interop/requirements.txt stamp
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" 2>/dev/null || { apt_ensure python3-venv; python3 -m venv "$venv"; }
    fi
    stamp="$venv/.requirements.sha256"
    if ! sha256sum -c "$stamp" >/dev/null 2>&1; then
        echo "==> installing Python test clients ($req)"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
        sha256sum "$req" > "$stamp"
    fi
    ESTUARY_TEST_PYTHON="$(pwd)/$venv/bin/python"
    export ESTUARY_TEST_PYTHON
}

# Install the JavaScript interop clients (tests/interop/js, from package-lock.json) if their
# lock changed since the last install. Needs Node.js 20 or newer.
npm_ensure() {
    local dir=tests/interop/js stamp
    if ! command -v node >/dev/null 2>&1; then
        apt_ensure nodejs npm
    fi
    stamp="$dir/node_modules/.lock.sha256"
    if ! (cd "$dir" && sha256sum -c "node_modules/.lock.sha256" >/dev/null 2>&1); then
        echo "==> installing JavaScript test clients ($dir)"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error && sha256sum package-lock.json > node_modules/.lock.sha256)
    fi
}
