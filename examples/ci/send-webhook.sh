#!/usr/bin/env bash
# Tell prefect-promotion that a build was published: a signed "build published" webhook
# (Standard Webhooks: HMAC-SHA256 over "<id>.<timestamp>.<body>" keyed with the whsec_ secret
# base64-decoded, the scheme promotion/signing.py implements for the receiver).
#
#   PROMOTION_WEBHOOK_URL=https://promote.example.com PROMOTION_WEBHOOK_SECRET=whsec_... \
#     send-webhook.sh SERVICE DIGEST [VERSION]
#
# Optional: PROMOTION_COMMIT, PROMOTION_BUILD_URL, PROMOTION_REQUESTED_BY, PROMOTION_TO,
# PROMOTION_DELIVERY_ID (default: a fresh id; reuse it when retrying so the receiver
# recognises the same delivery and starts no second run).
# Needs bash, openssl, base64, xxd and curl (present on GitHub and GitLab runners).
set -euo pipefail

service=${1:?usage: send-webhook.sh SERVICE DIGEST [VERSION]}
digest=${2:?usage: send-webhook.sh SERVICE DIGEST [VERSION]}
version=${3:-}
url=${PROMOTION_WEBHOOK_URL:?set PROMOTION_WEBHOOK_URL to the receiver, e.g. https://promote.example.com}
secret=${PROMOTION_WEBHOOK_SECRET:?set PROMOTION_WEBHOOK_SECRET (whsec_...) from your CI secret store}

case "$digest" in
  sha256:????????????????????????????????????????????????????????????????) ;;
  *) echo "send-webhook.sh: '$digest' is not a digest (sha256:<64 hex>)" >&2; exit 2 ;;
esac

json_string() {  # a JSON string literal (escapes backslash and double quote; CI values have no control chars)
  local s=${1//\\/\\\\}
  printf '"%s"' "${s//\"/\\\"}"
}

body="{\"service\":$(json_string "$service"),\"digest\":$(json_string "$digest")"
[ -n "$version" ] && body+=",\"version\":$(json_string "$version")"
[ -n "${PROMOTION_COMMIT:-}" ] && body+=",\"commit\":$(json_string "$PROMOTION_COMMIT")"
[ -n "${PROMOTION_BUILD_URL:-}" ] && body+=",\"build_url\":$(json_string "$PROMOTION_BUILD_URL")"
[ -n "${PROMOTION_REQUESTED_BY:-}" ] && body+=",\"requested_by\":$(json_string "$PROMOTION_REQUESTED_BY")"
[ -n "${PROMOTION_TO:-}" ] && body+=",\"to\":$(json_string "$PROMOTION_TO")"
body+="}"

id=${PROMOTION_DELIVERY_ID:-msg_$(openssl rand -hex 16)}
ts=$(date +%s)
b64=${secret#whsec_}
while (( ${#b64} % 4 )); do b64+="="; done  # unpadded base64 is accepted, as by the receiver
key=$(printf '%s' "$b64" | base64 -d | xxd -p | tr -d '\n')
sig=$(printf '%s.%s.%s' "$id" "$ts" "$body" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$key" -binary | base64)

curl --fail-with-body --silent --show-error --retry 3 --retry-all-errors \
  -X POST "${url%/}/hooks/standard" \
  -H 'content-type: application/json' \
  -H "webhook-id: $id" -H "webhook-timestamp: $ts" -H "webhook-signature: v1,$sig" \
  --data-binary "$body"
echo
