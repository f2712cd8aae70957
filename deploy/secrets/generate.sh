#!/bin/sh
# Makes the secrets docker-compose.yaml mounts, with openssl only, into this directory:
#   kek.hex                 the issuer's key-encryption key: 32 random bytes as 64 hex digits
#   lifecycle-worker.json   the lifecycle worker's service credential (docs/architecture.md,
#                           "Credential files"): client lifecycle-worker of tenant system, fresh ES256 key
#   registry-service.json   the registry's service credential, same format: client registry-service of
#                           tenant system, with which it asks the policy service to admit updates
#   bootstrap-admin.json    the operator's first platform-admin credential, same format
#   *.jwks.json             the public halves, registered by the issuer at start (--lifecycle-client,
#                           --registry-client, --platform-client)
#   ca.crt, ca.key          the deployment's TLS certificate authority (ca.key never leaves this
#                           directory; ca.crt is every service's --ca and agentctl's --ca)
#   <service>.crt/.key      one TLS server certificate per service (registry, issuer, policy,
#                           monitor, lifecycle) signed by the CA, for its compose DNS name, localhost
#                           and 127.0.0.1 (the healthchecks); the issuer's also names the host of
#                           AGENTID_PUBLIC_URL
#   temporal.crt/.key       the Temporal frontend's TLS server certificate (deployment CA)
#   temporal-worker.crt/.key   the lifecycle worker's client certificate for Temporal's mTLS
#   temporal-ui.crt/.key    the Temporal UI's client certificate for Temporal's mTLS
#   temporal-internode-ca.crt/.key, temporal-internode.crt/.key
#                           a CA of its own for Temporal's internode traffic and internal frontend,
#                           and the one certificate it signs (docs/deploy.md, "Temporal")
# Existing files are kept (delete one to replace it), except the public *.jwks.json, which are written
# again from their credentials (with the kid the issuer requires). Files are created with mode 0600.
#
#   AGENTID_PUBLIC_URL   issuer base URL written into the credential (default https://issuer:8080,
#                        the compose default; keep it equal to the one docker-compose.yaml uses)
set -eu

cd "$(dirname "$0")"
public_url="${AGENTID_PUBLIC_URL:-https://issuer:8080}"
public_url="${public_url%/}"
umask 077

if [ -e kek.hex ]; then
  echo "kek.hex exists; kept"
else
  openssl rand -hex 32 > kek.hex
  echo "wrote kek.hex"
fi

b64url() { base64 | tr -d '\n=' | tr '+/' '-_'; }

# jwk_member FILE NAME prints the string member NAME ("kty", "crv", "kid", "x", "y") of the key in the
# credential FILE, as this script or `agentid dev` writes it (one line, or indented), or nothing.
jwk_member() { sed -n "s/.*\"$2\" *: *\"\([^\"]*\)\".*/\1/p" "$1" | head -n 1; }

# thumbprint X Y prints the RFC 7638 SHA-256 thumbprint of the P-256 public key (x, y), base64url: the
# kid the platform gives the keys it makes, and the one a credential without a kid signs with.
thumbprint() {
  printf '{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}' "$1" "$2" | openssl dgst -sha256 -binary | b64url
}

# write_jwks CLIENT_ID KID X Y writes CLIENT_ID.jwks.json, the public JWK Set the issuer registers: the
# issuer refuses a key without a kid, and the kid must be the one the credential signs with.
write_jwks() {
  echo "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"alg\":\"ES256\",\"use\":\"sig\",\"kid\":\"$2\",\"x\":\"$3\",\"y\":\"$4\"}]}" > "$1.jwks.json"
}

# make_credential CLIENT_ID writes CLIENT_ID.json (the private credential, for the service that signs
# with it) and CLIENT_ID.jwks.json (its public JWK Set, for the issuer's flag of its role). Of an
# existing CLIENT_ID.json it keeps the key and writes CLIENT_ID.jwks.json again from it (it is public,
# and earlier versions of this script wrote it without the kid the issuer requires).
make_credential() {
  id="$1"
  if [ -e "$id.json" ]; then
    kty="$(jwk_member "$id.json" kty)"
    crv="$(jwk_member "$id.json" crv)"
    x="$(jwk_member "$id.json" x)"
    y="$(jwk_member "$id.json" y)"
    kid="$(jwk_member "$id.json" kid)"
    if [ "$kty" != EC ] || [ "$crv" != P-256 ] || [ -z "$x" ] || [ -z "$y" ]; then
      echo "generate.sh: $id.json exists but holds no EC P-256 key this script can read; write $id.jwks.json by hand or delete $id.json to make a new one" >&2
      exit 1
    fi
    if [ -z "$kid" ]; then
      kid="$(thumbprint "$x" "$y")"
    fi
    write_jwks "$id" "$kid" "$x" "$y"
    echo "$id.json exists; kept (wrote $id.jwks.json from it, kid $kid)"
    return 0
  fi
  der="$(mktemp)"
  # A P-256 key as SEC1 DER (121 bytes): d at offset 7, then the public point 04 || x || y at 56.
  openssl ecparam -name prime256v1 -genkey -noout -outform DER -out "$der"
  if [ "$(wc -c < "$der" | tr -d ' ')" != 121 ]; then
    rm -f "$der"
    echo "generate.sh: unexpected EC key encoding from openssl" >&2
    exit 1
  fi
  d="$(tail -c +8 "$der" | head -c 32 | b64url)"
  x="$(tail -c +58 "$der" | head -c 32 | b64url)"
  y="$(tail -c +90 "$der" | head -c 32 | b64url)"
  rm -f "$der"
  kid="$(thumbprint "$x" "$y")"
  issuer="$public_url/t/system"
  cat > "$id.json" <<JSON
{"tenant":"system","client_id":"$id","issuer":"$issuer","token_url":"$issuer/oauth2/token",
 "private_jwk":{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":"$kid","x":"$x","y":"$y","d":"$d"}}
JSON
  write_jwks "$id" "$kid" "$x" "$y"
  echo "wrote $id.json and $id.jwks.json (client $id of tenant system, issuer $issuer, kid $kid)"
}

# The lifecycle worker signs its calls to the other services with its credential, the registry its
# admission requests to the policy service with its own; the bootstrap admin is the operator's first
# identity (`agentctl login --credentials deploy/secrets/bootstrap-admin.json`). The issuer registers
# the three public keys at start, each with one role: the lifecycle worker's as lifecycle-worker
# (--lifecycle-client), the registry's as registry-service (--registry-client), the bootstrap admin's
# as platform-admin (--platform-client).
make_credential lifecycle-worker
make_credential registry-service
make_credential bootstrap-admin

# TLS. A P-256 CA, then one certificate per service: all gRPC and HTTP between the parts is TLS,
# verified against ca.crt. Certificates are reloaded by the services when their files change, so a
# renewal is: delete <service>.crt/.key, run this again, done (no restart).
if [ -e ca.crt ] && [ -e ca.key ]; then
  echo "ca.crt exists; kept"
else
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -keyout ca.key -out ca.crt -days 3650 -subj "/CN=agentid deployment CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "wrote ca.crt and ca.key (the TLS certificate authority; keep ca.key here)"
fi

# make_cert NAME [EXTRA_DNS] writes NAME.crt and NAME.key: a server certificate for the compose DNS
# name NAME, localhost and 127.0.0.1 (and EXTRA_DNS), valid 825 days, signed by the CA $cert_ca
# (default ca: ca.crt, ca.key).
cert_ca=ca
make_cert() {
  name="$1"
  extra="${2:-}"
  if [ -e "$name.crt" ] && [ -e "$name.key" ]; then
    echo "$name.crt exists; kept"
    return 0
  fi
  san="DNS:$name,DNS:localhost,IP:127.0.0.1"
  if [ -n "$extra" ] && [ "$extra" != "$name" ] && [ "$extra" != localhost ] && [ "$extra" != 127.0.0.1 ]; then
    case "$extra" in
      *[!0-9.]*) san="$san,DNS:$extra" ;;
      *) san="$san,IP:$extra" ;;
    esac
  fi
  csr="$(mktemp)"
  ext="$(mktemp)"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -keyout "$name.key" -out "$csr" -subj "/CN=$name" 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' "$san" > "$ext"
  openssl x509 -req -in "$csr" -CA "$cert_ca.crt" -CAkey "$cert_ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days 825 -sha256 -extfile "$ext" -out "$name.crt" 2>/dev/null
  rm -f "$csr" "$ext"
  echo "wrote $name.crt and $name.key ($san)"
}

public_host="$(printf '%s' "$public_url" | sed -e 's#^[a-zA-Z]*://##' -e 's#[/?].*$##' -e 's#:[0-9]*$##' -e 's#^\[##' -e 's#\]$##')"
make_cert registry
make_cert issuer "$public_host"
make_cert policy
make_cert monitor
make_cert lifecycle

# Temporal (docs/deploy.md, "Temporal"). The frontend serves "temporal" with a certificate of the
# deployment CA and requires client certificates of that CA (mTLS): the lifecycle worker's and the
# UI's. The cluster's internode traffic (history, matching, the system worker and the internal
# frontend, which authorizes nothing) uses a CA of its own that signs only temporal-internode, so no
# service certificate reaches it; temporal-setup and the healthcheck use that certificate too.
make_cert temporal
make_cert temporal-worker
make_cert temporal-ui
if [ -e temporal-internode-ca.crt ] && [ -e temporal-internode-ca.key ]; then
  echo "temporal-internode-ca.crt exists; kept"
else
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -keyout temporal-internode-ca.key -out temporal-internode-ca.crt -days 3650 -subj "/CN=agentid Temporal internode CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "wrote temporal-internode-ca.crt and temporal-internode-ca.key (Temporal's internode CA; keep the key here)"
fi
cert_ca=temporal-internode-ca
make_cert temporal-internode
cert_ca=ca
make_cert nats

# NATS identities: one nkey seed per identity in nats/ (admin for nats-setup, one per service, verifier
# for resource servers) and nats/users.conf, the server's users include with their least-privilege
# permissions. nkeys are ed25519 seeds in NATS's own encoding, which openssl does not write: this runs
# `agentid secrets nats` ($AGENTID_BIN, or go run from this repository). Existing seeds are kept and
# users.conf is rewritten from them. AGENTID_NATS_SUBSCRIBERS="acme beta" also makes the read-only
# subscriber seeds of those tenants (nats/subscriber-<tenant>.nk).
set -- secrets nats --out "$PWD/nats"
for tenant in ${AGENTID_NATS_SUBSCRIBERS:-}; do
  set -- "$@" --tenant "$tenant"
done
if [ -n "${AGENTID_BIN:-}" ]; then
  "$AGENTID_BIN" "$@"
else
  (cd ../.. && go run ./cmd/agentid "$@")
fi
