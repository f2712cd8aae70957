#!/bin/sh
# Makes the secrets docker-compose.yaml mounts, with openssl only, into this directory:
#   kek.hex                 the issuer's key-encryption key: 32 random bytes as 64 hex digits
#   lifecycle-worker.json   the lifecycle worker's service credential (docs/architecture.md,
#                           "Credential files"): client lifecycle-worker of tenant system, fresh ES256 key
#   bootstrap-admin.json    the operator's first platform-admin credential, same format
#   *.jwks.json             the public halves, registered by the issuer at start (--platform-client)
# Existing files are kept (delete one to replace it). Files are created with mode 0600.
#
#   AGENTID_PUBLIC_URL   issuer base URL written into the credential (default http://issuer:8080,
#                        the compose default; keep it equal to the one docker-compose.yaml uses)
set -eu

cd "$(dirname "$0")"
public_url="${AGENTID_PUBLIC_URL:-http://issuer:8080}"
public_url="${public_url%/}"
umask 077

if [ -e kek.hex ]; then
  echo "kek.hex exists; kept"
else
  openssl rand -hex 32 > kek.hex
  echo "wrote kek.hex"
fi

b64url() { base64 | tr -d '\n=' | tr '+/' '-_'; }

# make_credential CLIENT_ID writes CLIENT_ID.json (the private credential, for the service that signs
# with it) and CLIENT_ID.jwks.json (its public JWK Set, for the issuer's --platform-client flag).
make_credential() {
  id="$1"
  if [ -e "$id.json" ]; then
    echo "$id.json exists; kept"
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
  issuer="$public_url/t/system"
  cat > "$id.json" <<JSON
{"tenant":"system","client_id":"$id","issuer":"$issuer","token_url":"$issuer/oauth2/token",
 "private_jwk":{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","x":"$x","y":"$y","d":"$d"}}
JSON
  echo "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"alg\":\"ES256\",\"use\":\"sig\",\"x\":\"$x\",\"y\":\"$y\"}]}" > "$id.jwks.json"
  echo "wrote $id.json and $id.jwks.json (client $id of tenant system, issuer $issuer)"
}

# The lifecycle worker signs its calls to the other services with its credential; the bootstrap admin
# is the operator's first identity (`agentctl login --credentials deploy/secrets/bootstrap-admin.json`).
# The issuer registers both public keys at start: the lifecycle worker's with the narrow role
# lifecycle-worker (--lifecycle-client), the bootstrap admin's as platform-admin (--platform-client).
make_credential lifecycle-worker
make_credential bootstrap-admin
