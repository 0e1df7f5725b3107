#!/usr/bin/env bash
# schemathesis against a running server: the admin API's OpenAPI document, a bounded number of
# examples per operation, no 5xx and no response that violates the schema (issue 17).
#
# A fresh SQLite database and keyring in a temporary directory, `migrate` + `bootstrap`, one
# user holding every role (so no operation stops at its permission check) and a token for it
# from `api_token_create`, then gunicorn on a free port. Exits non-zero on any finding.
# MAX_EXAMPLES (default 20) bounds the examples per operation. Used by .ci/run. Revoking
# tokens is left out: the fuzzer would revoke its own token and test nothing after that
# (tests/adminapi/test_tokens.py covers it).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-.venv/bin}
MAX_EXAMPLES=${MAX_EXAMPLES:-20}

WORK=$(mktemp -d)
PORT=$("$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

export KMS_DATA_DIR="$WORK" GUNICORN_BIND="127.0.0.1:$PORT" DEBUG=false
unset DATABASE_URL
"$BIN/python" -m kmsportal.trial >/dev/null
"$BIN/python" manage.py migrate --noinput >/dev/null
"$BIN/python" manage.py bootstrap >/dev/null
"$BIN/python" manage.py createuser fuzz --role administrator --role key_custodian \
    --role ca_operator --role auditor >/dev/null
TOKEN=$("$BIN/python" manage.py api_token_create fuzz --scope roles --days 1 --name schemathesis 2>/dev/null)

GUNICORN_WORKERS=2 "$BIN/gunicorn" -c kmsportal/gunicorn.conf.py --access-logfile /dev/null \
    >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
"$BIN/python" - "$PORT" <<'PY'
import sys, time, urllib.request
for _ in range(120):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz", timeout=2)
        break
    except OSError:
        time.sleep(0.5)
else:
    sys.exit("the server did not start")
PY

run_schemathesis() {
    "$BIN/schemathesis" run "http://127.0.0.1:$PORT/api/v1/openapi.json" \
        --header "Authorization: Bearer $TOKEN" \
        --exclude-operation-id tokens_revoke \
        --checks not_a_server_error,response_schema_conformance \
        --max-examples "$MAX_EXAMPLES" --workers 2 --seed 17 \
        --phases examples,coverage,fuzzing --request-timeout 30 \
        --generation-database none --no-color 2>&1 | tee "$WORK/schemathesis.log"
    return "${PIPESTATUS[0]}"
}
status=0
run_schemathesis || status=$?
# Once in three CI runs, Python 3.11's ast module raised "AST constructor recursion depth
# mismatch" while Hypothesis parsed schemathesis's own source to describe a lambda: an error
# in the tool, reported as a "Runtime Error", not a finding about the API. Only then, and only
# when no check failed, run once more. The seed is fixed, so a real finding comes back.
if [ "$status" -ne 0 ] && grep -q "AST constructor recursion depth mismatch" "$WORK/schemathesis.log" \
    && ! grep -q "FAILURES" "$WORK/schemathesis.log"; then
    echo "== schemathesis failed inside Python's ast module, not on a finding: once more =="
    status=0
    run_schemathesis || status=$?
fi
if [ "$status" -ne 0 ]; then
    echo "== server log (errors) =="
    grep -v '^\[' "$WORK/server.log" | tail -n 80 || true
fi
exit "$status"
