#!/usr/bin/env sh
# The secrets docker-compose.yml expects, made once on the host:
#   ops/secrets/ray_auth_token   the Ray cluster's shared token (RAY_AUTH_MODE=token)
#   ops/nginx/certs/unimatch.*   a self-signed TLS certificate (ops/nginx/make-cert.sh)
# Existing files are kept: delete one to make it anew (then restart the stack).
# Both folders are ignored by git.
set -eu
here=$(dirname "$0")

mkdir -p "$here/secrets"
token="$here/secrets/ray_auth_token"
if [ ! -s "$token" ]; then
  umask 077
  od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$token"
  # Read by the containers' unprivileged user through a bind mount.
  chmod 644 "$token"
  echo "wrote $token"
fi

if [ ! -s "$here/nginx/certs/unimatch.crt" ]; then
  "$here/nginx/make-cert.sh" "$here/nginx/certs"
fi
