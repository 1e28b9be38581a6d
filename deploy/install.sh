#!/bin/sh
# Install the gateway on a CI build host or a shared dev VM.
#
#   deploy/install.sh [--bin PATH] [--destdir DIR] [--no-start]
#
# Installs the binary, the default config (kept when one exists), the systemd unit, the state
# dir and the internal CA (trusted by the system store and certifi). With --destdir everything
# goes under DIR (for images and packaging) and nothing is started.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
# `cargo xtask build --release` leaves the profile-guided build in target/<host>/release; a plain
# `cargo build --release` in target/release. The newer of the two, unless --bin says.
plain="$here/../target/release/gateway"
pgo="$here/../target/$(uname -m)-unknown-linux-gnu/release/gateway"
bin=$plain
if [ -x "$pgo" ] && { [ ! -x "$plain" ] || [ "$pgo" -nt "$plain" ]; }; then
    bin=$pgo
fi
destdir=""
start=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --destdir) destdir="$2"; shift 2 ;;
        --no-start) start=no; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1" >&2; exit 64 ;;
    esac
done
if [ ! -x "$bin" ]; then
    echo "install.sh: no gateway binary at $bin (build it: cargo xtask build --release, or --bin PATH)" >&2
    exit 66
fi
if [ -n "$destdir" ]; then
    start=no
    # Where the Debian layout keeps local anchors: the CA goes there inside the image.
    install -d -m 0755 "$destdir/usr/local/share/ca-certificates" "$destdir/etc/ssl/certs"
fi

say() { printf 'install.sh: %s\n' "$*"; }

install -d -m 0755 "$destdir/usr/local/bin" "$destdir/etc/gateway" \
    "$destdir/etc/systemd/system" "$destdir/usr/local/share/doc/gateway"
install -m 0755 "$bin" "$destdir/usr/local/bin/gateway"
say "binary      $destdir/usr/local/bin/gateway"

config="$destdir/etc/gateway/gateway.toml"
if [ -e "$config" ]; then
    say "config      $config (kept)"
else
    # The state dir of the installed config is /var/lib/gateway; under --destdir it points
    # into DIR so that the CA below is created there.
    sed "s|^state_dir = .*|state_dir = \"$destdir/var/lib/gateway\"|" \
        "$here/config/default.toml" > "$config.tmp"
    chmod 0644 "$config.tmp"
    mv "$config.tmp" "$config"
    say "config      $config"
fi
"$destdir/usr/local/bin/gateway" check -c "$config" >/dev/null

install -m 0644 "$here/systemd/gateway.service" "$destdir/etc/systemd/system/gateway.service"
install -m 0644 "$here/../README.md" "$destdir/usr/local/share/doc/gateway/README.md"
say "unit        $destdir/etc/systemd/system/gateway.service"
install -d -m 0700 "$destdir/var/lib/gateway"
say "state       $destdir/var/lib/gateway"

"$destdir/usr/local/bin/gateway" ca init -c "$config"
if [ -n "$destdir" ]; then
    "$destdir/usr/local/bin/gateway" ca install -c "$config" --root "$destdir"
else
    "$destdir/usr/local/bin/gateway" ca install -c "$config" --certifi
fi
if [ -n "$destdir" ]; then
    # The installed config names the real path once the tree is in place.
    sed -i "s|^state_dir = .*|state_dir = \"/var/lib/gateway\"|" "$config"
fi

if [ "$start" = yes ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now gateway.service
    say "started     systemctl status gateway"
fi

cat <<'NEXT'

Next:
  1. Put the real keys in the vault (never in the jobs):
       gateway keys set openai --stdin -c /etc/gateway/gateway.toml
  2. Jobs keep a dummy key, e.g. OPENAI_API_KEY=sk-dummy; their calls to api.openai.com now
     carry the vault's key, and whatever they send as a credential is removed.
  3. Check the host: gateway doctor -c /etc/gateway/gateway.toml
  4. See what went out: gateway journal list -c /etc/gateway/gateway.toml
NEXT
