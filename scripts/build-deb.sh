#!/bin/bash
# Builds natgw's Debian package with dpkg-deb: target/debian/natgw_<version>_<arch>.deb.
# Takes the release binary and the built-in policies that scripts/setup.sh builds (builds
# them when missing). Prints the package's path.
#
#   /usr/sbin/natgw                       the binary (debug info stripped)
#   /etc/natgw/natgw.toml                 commented example config (a conffile)
#   /etc/logrotate.d/natgw                the flow log's rotation (a conffile)
#   /lib/systemd/system/natgw.service     Type=notify, sandboxed, restart handoff
#   /lib/systemd/system/natgw-ha-watch.service   keepalived's liveness file (a pair)
#   /usr/lib/natgw/policies/*.wasm        the built-in policies
#   /usr/share/doc/natgw/examples/        policy configs, keepalived, monitoring
#   /usr/share/man/man1/natgw*.1.gz, shell completions (bash, zsh, fish)
#   /var/cache/natgw, /var/log/natgw
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
ARCH=$(dpkg --print-architecture)
BIN=target/release/natgw
POLICIES=(egress_allowlist subnet_port_pools flow_log_filter)
[ -x "$BIN" ] || cargo build --release --locked -q -p natgw
for p in "${POLICIES[@]}"; do
  [ -f "target/policies/$p.wasm" ] || scripts/build-policy.sh >/dev/null
done

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
chmod 0755 "$STAGE"
d() { install -d -m 0755 "$STAGE/$1"; }
f() { install -D -m "$1" "$2" "$STAGE/$3"; }

d DEBIAN
d usr/sbin
objcopy --strip-debug "$BIN" "$STAGE/usr/sbin/natgw"
chmod 0755 "$STAGE/usr/sbin/natgw"
f 0644 packaging/natgw.toml etc/natgw/natgw.toml
f 0644 packaging/logrotate etc/logrotate.d/natgw
f 0644 examples/systemd/natgw.service lib/systemd/system/natgw.service
f 0644 examples/ha/natgw-ha-watch.service lib/systemd/system/natgw-ha-watch.service
for p in "${POLICIES[@]}"; do
  f 0644 "target/policies/$p.wasm" "usr/lib/natgw/policies/$p.wasm"
done
DOC=usr/share/doc/natgw
for c in examples/demo/policies/*.toml; do
  f 0644 "$c" "$DOC/examples/policies/$(basename "$c")"
done
for c in examples/ha/keepalived.conf examples/ha/notify examples/monitoring/*; do
  f 0644 "$c" "$DOC/examples/${c#examples/}"
done
chmod 0755 "$STAGE/$DOC/examples/ha/notify"
f 0644 README.md "$DOC/README.md"
cat > "$STAGE/$DOC/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: natgw

Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
# Man pages and completions, from the binary's own command definitions.
d usr/share/man/man1
"$BIN" man --dir "$STAGE/usr/share/man/man1"
gzip -9n "$STAGE"/usr/share/man/man1/*.1
f 0644 /dev/stdin usr/share/bash-completion/completions/natgw < <("$BIN" completions bash)
f 0644 /dev/stdin usr/share/zsh/vendor-completions/_natgw < <("$BIN" completions zsh)
f 0644 /dev/stdin usr/share/fish/vendor_completions.d/natgw.fish < <("$BIN" completions fish)
d var/cache/natgw
d var/log/natgw

for s in postinst prerm postrm; do
  install -m 0755 "packaging/$s" "$STAGE/DEBIAN/$s"
done
printf '/etc/natgw/natgw.toml\n/etc/logrotate.d/natgw\n' > "$STAGE/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
cat > "$STAGE/DEBIAN/control" <<CONTROL
Package: natgw
Version: $VERSION
Architecture: $ARCH
Maintainer: natgw developers <natgw@localhost>
Installed-Size: $SIZE
Depends: libc6 (>= 2.34), libgcc-s1
Recommends: logrotate
Suggests: keepalived, prometheus
Section: net
Priority: optional
Description: programmable NAT gateway
 natgw translates addresses for private subnets with an io_uring data plane and
 its own connection tracking; WebAssembly policies decide which flows may leave,
 which address and port pool a subnet uses and what goes into the flow log, and
 can be swapped on the running gateway without dropping a connection. Flow logs
 and metrics go to OpenTelemetry and Prometheus; a pair of gateways with
 keepalived fails over without dropping connections.
CONTROL
mkdir -p target/debian
OUT="target/debian/natgw_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$OUT" >/dev/null
echo "$OUT"
