#!/usr/bin/env bash
# curl through Envoy with a Gatehouse API key: allowed, refused, not
# authenticated, rate limited. The same cases as openai_sdk.py.
#
#   GATEWAY_URL=http://localhost:10000 GATEHOUSE_API_KEY=gk_... examples/curl.sh
#
# Exit status 0 when each case got its status (200, 403, 401, 429).
set -euo pipefail
G=${GATEWAY_URL:-http://localhost:10000}
KEY=${GATEHOUSE_API_KEY:?set GATEHOUSE_API_KEY}
MODEL=${MODEL:-llama-3}
DENIED_MODEL=${DENIED_MODEL:-gpt-4o}
MAX_CALLS=${MAX_CALLS:-200}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
failed=0

# call CASE EXPECTED_STATUS curl-args...: prints the status, the body and the
# headers that matter; counts a wrong status.
call() {
  local case=$1 want=$2; shift 2
  local status
  status=$(curl -sS -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' "$@")
  echo "$case: $status $(cat "$tmp/body")"
  grep -i -E '^(www-authenticate|retry-after|x-ratelimit-[a-z]+):' "$tmp/headers" | tr -d '\r' | sed "s/^/$case: /" || true
  [ "$status" = "$want" ] || { echo "$case: expected $want" >&2; failed=1; }
}

chat() { printf '{"model": "%s", "messages": [{"role": "user", "content": "Say hello."}]}' "$1"; }

# 200: the upstream answers, and sees the caller's identity, not the key.
call allowed 200 "$G/v1/chat/completions" -H "Authorization: Bearer $KEY" \
  -H 'content-type: application/json' -d "$(chat "$MODEL")"
# 403 PERMISSION_DENIED, param "model": a model the key may not use.
call refused 403 "$G/v1/chat/completions" -H "X-API-Key: $KEY" \
  -H 'content-type: application/json' -d "$(chat "$DENIED_MODEL")"
# 401 AUTHENTICATION_FAILED with a WWW-Authenticate challenge.
call unauthenticated 401 "$G/v1/models" -H "X-API-Key: gk_not_a_real_key"
# 429 RATE_LIMITED with Retry-After, once the budget is spent.
for _ in $(seq "$MAX_CALLS"); do
  status=$(curl -sS -o /dev/null -w '%{http_code}' "$G/v1/models" -H "X-API-Key: $KEY")
  [ "$status" = 429 ] && break
done
call "rate limited" 429 "$G/v1/models" -H "X-API-Key: $KEY"
exit $failed
