#!/bin/sh
# Makes the secrets docker-compose.yaml mounts, with openssl only, into this directory:
#   kek.hex                 the issuer's key-encryption key: 32 random bytes as 64 hex digits
#   lifecycle-worker.json   the lifecycle worker's service credential (docs/architecture.md,
#                           "Credential files"): client lifecycle-worker of tenant system, fresh ES256 key
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

if [ -e lifecycle-worker.json ]; then
  echo "lifecycle-worker.json exists; kept"
  exit 0
fi

der="$(mktemp)"
trap 'rm -f "$der"' EXIT
# A P-256 key as SEC1 DER (121 bytes): d at offset 7, then the public point 04 || x || y at 56.
openssl ecparam -name prime256v1 -genkey -noout -outform DER -out "$der"
if [ "$(wc -c < "$der" | tr -d ' ')" != 121 ]; then
  echo "generate.sh: unexpected EC key encoding from openssl" >&2
  exit 1
fi
b64url() { base64 | tr -d '\n=' | tr '+/' '-_'; }
d="$(tail -c +8 "$der" | head -c 32 | b64url)"
x="$(tail -c +58 "$der" | head -c 32 | b64url)"
y="$(tail -c +90 "$der" | head -c 32 | b64url)"

issuer="$public_url/t/system"
cat > lifecycle-worker.json <<JSON
{"tenant":"system","client_id":"lifecycle-worker","issuer":"$issuer","token_url":"$issuer/oauth2/token",
 "private_jwk":{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","x":"$x","y":"$y","d":"$d"}}
JSON
echo "wrote lifecycle-worker.json (client lifecycle-worker, issuer $issuer)"
echo "its public key, to register as the client's JWKS in tenant system:"
echo "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"alg\":\"ES256\",\"use\":\"sig\",\"x\":\"$x\",\"y\":\"$y\"}]}"
