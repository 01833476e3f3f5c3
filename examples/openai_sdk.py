#!/usr/bin/env python3
"""The official OpenAI Python SDK through Envoy, with a Gatehouse API key.

    pip install -r examples/requirements.txt
    GATEWAY_URL=http://localhost:10000 GATEHOUSE_API_KEY=gk_... python3 examples/openai_sdk.py

Against the shipped envoy/envoy.yaml and policy, with a key whose group (or
the key itself) allows MODEL but not DENIED_MODEL and has a rate limit:

  allowed          a chat completion: 200, a ChatCompletion
  refused          a model outside allowed_models: 403, openai.PermissionDeniedError
  unauthenticated  a wrong key: 401, openai.AuthenticationError
  rate limited     calls past the caller's budget: 429, openai.RateLimitError

Gatehouse's error body is the one OpenAI's API sends ({"error": {"message",
"type", "code", "param"}}), so the SDK raises its usual exceptions and fills
in e.code and e.type. Exit status 0 when each case turned out as above.
"""
import os
import sys

import openai

GATEWAY = os.environ.get("GATEWAY_URL", "http://localhost:10000").rstrip("/")
KEY = os.environ["GATEHOUSE_API_KEY"]
MODEL = os.environ.get("MODEL", "llama-3")
DENIED_MODEL = os.environ.get("DENIED_MODEL", "gpt-4o")
MAX_CALLS = int(os.environ.get("MAX_CALLS", "200"))

# The SDK sends the key as `Authorization: Bearer`, which Gatehouse accepts.
# max_retries=0: by default the SDK retries 429s and 5xx itself (honouring
# Retry-After); here every answer is shown as it comes.
client = openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key=KEY, max_retries=0)
HELLO = [{"role": "user", "content": "Say hello."}]


def show(case, e):
    """One line for a refusal: the exception, the status and Gatehouse's error code."""
    message = e.body.get("message") if isinstance(e.body, dict) else e.message
    print(f"{case}: {type(e).__name__} {e.status_code} {e.code} ({e.type}): {message}")


def allowed():
    completion = client.chat.completions.create(model=MODEL, messages=HELLO)
    print(f"allowed: {completion.model}: {completion.choices[0].message.content}")
    return True


def refused():
    try:
        client.chat.completions.create(model=DENIED_MODEL, messages=HELLO)
    except openai.PermissionDeniedError as e:
        show("refused", e)
        return e.code == "PERMISSION_DENIED"
    print(f"refused: {DENIED_MODEL} was allowed")
    return False


def unauthenticated():
    wrong = openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key="gk_not_a_real_key", max_retries=0)
    try:
        wrong.models.list()
    except openai.AuthenticationError as e:
        show("unauthenticated", e)
        print(f"unauthenticated: WWW-Authenticate: {e.response.headers.get('www-authenticate')}")
        return e.code == "AUTHENTICATION_FAILED"
    print("unauthenticated: a wrong key was accepted")
    return False


def rate_limited():
    for calls in range(1, MAX_CALLS + 1):
        try:
            client.models.list()
        except openai.RateLimitError as e:
            show("rate limited", e)
            h = e.response.headers
            print(
                f"rate limited: after {calls - 1} calls; Retry-After: {h.get('retry-after')}, "
                f"X-RateLimit-Limit: {h.get('x-ratelimit-limit')}, X-RateLimit-Remaining: {h.get('x-ratelimit-remaining')}"
            )
            return e.code == "RATE_LIMITED"
    print(f"rate limited: {MAX_CALLS} calls and no 429 (does the key have a rate limit?)")
    return False


if __name__ == "__main__":
    results = [allowed(), refused(), unauthenticated(), rate_limited()]
    sys.exit(0 if all(results) else 1)
