#!/usr/bin/env bash
# Make a private CA and one server certificate for the SuperLink (and the
# SuperNodes' request endpoints) with openssl.
#
#   scripts/make-certs.sh [--out DIR] [--force] [--key-owner UID[:GID]] [EXTRA_NAME ...]
#
# Writes into DIR (default: deploy/certs, git-ignored; created 0700):
#   ca.crt ca.key          the CA: give ca.crt to every client (SuperNode --root-certificates,
#                          `flwr` connection root-certificates, request clients)
#   server.crt server.key  the server certificate, signed by the CA; SANs: localhost,
#                          127.0.0.1, ::1, superlink, supernode-1..3, requests-1..3 (the
#                          compose service names), plus every EXTRA_NAME
#                          (a DNS name, or an IPv4/IPv6 address)
#
# Keys are ECDSA P-256 (as strong as RSA-3072, made in milliseconds rather than
# seconds, and accepted by gRPC and every TLS 1.2+ client), 0600; certificates
# 0644; whatever the umask. --key-owner hands server.key to another user (needs
# root), e.g. 49999, the Flower images' `app` user, for the compose file's bind
# mounts. Refuses to overwrite existing files unless --force is
# given (a new CA would lock out every client that trusts the old one).
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/deploy/certs"
FORCE=0
KEY_OWNER=""
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || { echo "error: --out needs a directory" >&2; exit 2; }; OUT="$2"; shift 2 ;;
        --out=*) OUT="${1#--out=}"; shift ;;
        --force) FORCE=1; shift ;;
        --key-owner) [ $# -ge 2 ] || { echo "error: --key-owner needs UID[:GID]" >&2; exit 2; }
                     KEY_OWNER="$2"; shift 2 ;;
        --key-owner=*) KEY_OWNER="${1#--key-owner=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "error: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) EXTRA+=("$1"); shift ;;
    esac
done

if [ -n "$KEY_OWNER" ] && ! [[ "$KEY_OWNER" =~ ^[0-9]+(:[0-9]+)?$ ]]; then
    echo "error: --key-owner takes a numeric UID or UID:GID, got '$KEY_OWNER'" >&2
    exit 2
fi
command -v openssl >/dev/null || { echo "error: openssl is not installed" >&2; exit 1; }
umask 077  # everything this script creates starts private; certificates are opened up below

FILES=(ca.crt ca.key server.crt server.key)
if [ "$FORCE" != 1 ]; then
    for f in "${FILES[@]}"; do
        if [ -e "$OUT/$f" ]; then
            echo "error: $OUT/$f exists; not overwriting (use --force to make new certificates)" >&2
            exit 1
        fi
    done
fi
mkdir -p "$OUT"

# Subject alternative names: the fixed ones, then the extra names (IP or DNS).
SAN="DNS:localhost,IP:127.0.0.1,IP:::1,DNS:superlink"
for i in 1 2 3; do SAN="$SAN,DNS:supernode-$i,DNS:requests-$i"; done
for name in ${EXTRA[@]+"${EXTRA[@]}"}; do
    if [[ "$name" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ || "$name" == *:* ]]; then
        SAN="$SAN,IP:$name"
    elif [[ "$name" =~ ^[A-Za-z0-9*]([A-Za-z0-9.*-]*[A-Za-z0-9])?$ ]]; then
        SAN="$SAN,DNS:$name"
    else
        echo "error: '$name' is neither a DNS name nor an IP address" >&2
        exit 2
    fi
done

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

cat > "$TMP/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
O = fedunlearn
CN = fedunlearn deployment CA
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
cat > "$TMP/server.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = $SAN
EOF

# Write into the temporary directory first, then move all four files into place.
new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
new_key "$TMP/ca.key"
openssl req -new -x509 -sha256 -days 3650 -key "$TMP/ca.key" -config "$TMP/ca.cnf" -out "$TMP/ca.crt"
new_key "$TMP/server.key"
openssl req -new -sha256 -key "$TMP/server.key" -subj "/O=fedunlearn/CN=superlink" -out "$TMP/server.csr"
openssl x509 -req -sha256 -days 825 -in "$TMP/server.csr" -CA "$TMP/ca.crt" -CAkey "$TMP/ca.key" \
    -CAcreateserial -extfile "$TMP/server.ext" -out "$TMP/server.crt" 2>/dev/null
openssl verify -CAfile "$TMP/ca.crt" "$TMP/server.crt" >/dev/null

chmod 600 "$TMP/ca.key" "$TMP/server.key"
chmod 644 "$TMP/server.crt" "$TMP/ca.crt"
if [ -n "$KEY_OWNER" ]; then
    chown "$KEY_OWNER" "$TMP/server.key" \
        || { echo "error: cannot give server.key to $KEY_OWNER (run as root, e.g. with sudo)" >&2; exit 1; }
fi
for f in "${FILES[@]}"; do
    mv -f "$TMP/$f" "$OUT/$f"
done
echo "wrote $OUT/{ca.crt,ca.key,server.crt,server.key}"
echo "server certificate SANs: $SAN"
