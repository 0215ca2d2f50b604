#!/usr/bin/env bash
# Make the TimescaleDB extension available to the system PostgreSQL on Debian/Ubuntu.
#
# Uses an installed TimescaleDB if there is one. Otherwise builds the Apache-2 edition from
# Debian's *source* package (the newest suite that carries it) against the system PostgreSQL:
# a private apt source list and state directory hold the deb-src entry, so the system's apt
# configuration is never touched and no foreign binary packages are ever offered to apt.
#
# Idempotent: a second run finds the extension and exits at once.
# Environment: PG_MAJOR (default: newest /usr/lib/postgresql/*), TSDB_SUITE (default: trixie).
set -euo pipefail

PG_MAJOR=${PG_MAJOR:-$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1)}
SUITE=${TSDB_SUITE:-trixie}
[ -n "$PG_MAJOR" ] || { echo "install-timescaledb: no PostgreSQL server found under /usr/lib/postgresql" >&2; exit 1; }
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
SHAREDIR=/usr/share/postgresql/$PG_MAJOR/extension
LIBDIR=/usr/lib/postgresql/$PG_MAJOR/lib

if ls "$SHAREDIR"/timescaledb.control >/dev/null 2>&1 && ls "$LIBDIR"/timescaledb*.so >/dev/null 2>&1; then
  echo "install-timescaledb: TimescaleDB already installed for PostgreSQL $PG_MAJOR"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

if [ ! -x "$PG_CONFIG" ] || ! dpkg -s "postgresql-server-dev-$PG_MAJOR" >/dev/null 2>&1 || ! command -v cmake >/dev/null; then
  echo "install-timescaledb: installing build dependencies"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "postgresql-server-dev-$PG_MAJOR" cmake gcc make libssl-dev >/dev/null
fi

# The Debian mirror this machine already uses, read from its own apt configuration.
mirror=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
  | grep -v -- '-security' | grep -oE 'https?://[^ ]+/debian/?' | head -n 1 || true)
[ -n "$mirror" ] || { echo "install-timescaledb: no Debian mirror found in /etc/apt" >&2; exit 1; }

work=$(mktemp -d /tmp/agts-tsdb-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/src"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror%/} $SUITE main" > "$work/sources.list"
apt_private=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
             -o "Dir::State::Lists=$work/lists" -o "APT::Sandbox::User=root")

echo "install-timescaledb: fetching the timescaledb source package from Debian $SUITE"
apt-get "${apt_private[@]}" update -qq
(cd "$work/src" && apt-get "${apt_private[@]}" source --download-only -qq timescaledb)

orig=$(ls "$work"/src/timescaledb_*.orig.tar.* | head -n 1)
tar -xf "$orig" -C "$work/src"
srcdir=$(find "$work/src" -mindepth 1 -maxdepth 1 -type d | head -n 1)

echo "install-timescaledb: building $(basename "$srcdir") against PostgreSQL $PG_MAJOR (Apache-2 edition)"
(cd "$srcdir" && ./bootstrap -DPG_CONFIG="$PG_CONFIG" -DAPACHE_ONLY=ON -DREGRESS_CHECKS=OFF \
   -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF -DCMAKE_BUILD_TYPE=Release >"$work/bootstrap.log" 2>&1) \
  || { tail -n 40 "$work/bootstrap.log" >&2; exit 1; }
(make -C "$srcdir/build" -j"$(nproc)" >"$work/make.log" 2>&1 && $SUDO make -C "$srcdir/build" install >>"$work/make.log" 2>&1) \
  || { tail -n 40 "$work/make.log" >&2; exit 1; }
echo "install-timescaledb: installed $(basename "$srcdir") for PostgreSQL $PG_MAJOR"
