#!/usr/bin/env sh
# A self-signed TLS certificate for running the stack locally:
#   ops/nginx/make-cert.sh [folder]     (default: ops/nginx/certs)
# writes unimatch.crt and unimatch.key, valid for localhost, 127.0.0.1 and ::1
# (and the names in $CERT_NAMES, comma-separated, e.g. "unimatch.lan").
# Browsers warn about it; import unimatch.crt as trusted to silence them.
# Never use it in production: mount a real certificate instead.
set -eu

out=${1:-"$(dirname "$0")/certs"}
mkdir -p "$out"
names="DNS:localhost,IP:127.0.0.1,IP:::1"
if [ -n "${CERT_NAMES:-}" ]; then
  for name in $(echo "$CERT_NAMES" | tr ',' ' '); do
    names="$names,DNS:$name"
  done
fi

umask 077
openssl req -x509 -newkey rsa:2048 -sha256 -nodes -days 825 \
  -subj "/CN=UniMatch local" \
  -addext "subjectAltName=$names" \
  -addext "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign" \
  -addext "extendedKeyUsage=serverAuth" \
  -keyout "$out/unimatch.key" -out "$out/unimatch.crt" 2>/dev/null
chmod 644 "$out/unimatch.crt"
echo "wrote $out/unimatch.crt and $out/unimatch.key"
