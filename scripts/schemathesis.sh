#!/usr/bin/env bash
# Schemathesis against a live server: the real `gatehouse serve` binary on a free
# 127.0.0.1 port with a fresh SQLite database, tested against the OpenAPI document it
# serves at /openapi.json. Every phase (examples, coverage, fuzzing, stateful), positive
# and negative data, every check but positive_data_acceptance (see below). Fails on any
# failure, prints the number of generated test cases and fails when it is under
# SCHEMATHESIS_MIN_CASES. Only 127.0.0.1 is ever contacted, and every step is bounded
# in time.
#
# Knobs (environment): SCHEMATHESIS_MAX_EXAMPLES (per operation and phase, default 300),
# SCHEMATHESIS_SEED (default 20261124), SCHEMATHESIS_MIN_CASES (default 2000),
# SCHEMATHESIS_TIME_LIMIT (seconds for the run itself, default 600).
#
# Why not positive_data_acceptance: it wants every schema-valid body answered 2xx, so the
# schema would have to encode the server's whole validation (NFKC usernames, RFC 5322
# addresses, the common-password list, accounts that exist). The document states those
# rules in descriptions and keeps its constraints no stricter than the server, so that
# negative_data_rejection holds exactly: whatever the schema rejects, the server rejects.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

ST_VERSION=4.32.5
VENV=target/schemathesis-venv
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-300}
SEED=${SCHEMATHESIS_SEED:-20261124}
MIN_CASES=${SCHEMATHESIS_MIN_CASES:-2000}
TIME_LIMIT=${SCHEMATHESIS_TIME_LIMIT:-600}

say() { printf '[schemathesis] %s\n' "$*" >&2; }
die() { say "FATAL: $*"; exit 1; }
started=$(date +%s)

# --- Schemathesis, pinned, in a venv of its own --------------------------------------
if ! "$VENV/bin/st" --version 2>/dev/null | grep -qF "$ST_VERSION"; then
  say "installing schemathesis $ST_VERSION into $VENV"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian's python3 keeps venv (ensurepip) in a package of its own.
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  timeout 600 "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "schemathesis==$ST_VERSION" || die "pip install schemathesis==$ST_VERSION failed"
fi
"$VENV/bin/st" --version

# --- The server -----------------------------------------------------------------------
timeout 900 cargo build --locked --bin gatehouse
# Server log, database, hooks and reports stay here after the run, for a look at failures.
work="$PWD/target/schemathesis-run"
rm -rf "$work"
mkdir -p "$work"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Port 0: the kernel picks a free port, read back from the "listening on" line.
# Cheap hashing and rate limits out of reach, so the run measures the API and not the
# limiter; 429 stays documented and is checked by the black-box suites. No SMTP or
# Twilio: codes go to the console notifier. It runs in $work, where no .env can reach it.
: >"$work/server.log"
cd "$work"
env -u SMTP_URL -u EMAIL_USER -u EMAIL_PASS -u TWILIO_SID -u TWILIO_TOKEN -u TWILIO_PHONE \
  -u REDIS_URL -u TRUSTED_PROXIES -u SECRET_KEY \
  LISTEN_ADDR=127.0.0.1:0 \
  DATABASE_URL="sqlite://$work/gatehouse.db" \
  COOKIE_SECURE=false \
  ARGON2_MEMORY_KIB=1024 ARGON2_ITERATIONS=1 \
  RATE_FORGOT_PER_ACCOUNT=1000000/1m RATE_FORGOT_PER_IP=1000000/1m \
  RATE_CODES_PER_ACCOUNT=1000000/1m \
  RATE_VALIDATE_PER_ACCOUNT=1000000/1m RATE_VALIDATE_PER_IP=1000000/1m \
  RATE_LOGIN_PER_ACCOUNT=1000000/1m RATE_LOGIN_PER_ACCOUNT_LONG=1000000/1m \
  RATE_LOGIN_PER_IP=1000000/1m RATE_REGISTER_PER_IP=1000000/1m RATE_RESET_PER_IP=1000000/1m \
  RATE_SEND_VERIFICATION_PER_ACCOUNT=1000000/1m RATE_SEND_VERIFICATION_PER_IP=1000000/1m \
  RATE_VERIFY_PER_ACCOUNT=1000000/1m RATE_VERIFY_PER_IP=1000000/1m \
  RATE_ACCOUNT_PER_USER=1000000/1m RATE_ACCOUNT_PER_IP=1000000/1m \
  RATE_MFA_PER_ACCOUNT=1000000/1m RATE_MFA_PER_IP=1000000/1m \
  RATE_LOGIN_CODE_PER_ACCOUNT=1000000/1m RATE_LOGIN_CODE_PER_IP=1000000/1m \
  CODE_LOGIN=true \
  LOG_FORMAT=text RUST_LOG=info NO_COLOR=1 \
  "$root/target/debug/gatehouse" serve >"$work/server.log" 2>&1 &
server_pid=$!
cd "$root"

addr=""
for _ in $(seq 300); do
  addr=$(sed -n 's/.*listening on http:\/\/\(127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/server.log" | head -1 || true)
  [ -n "$addr" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; die "the server exited"; }
  sleep 0.1
done
[ -n "$addr" ] || { cat "$work/server.log" >&2; die "the server did not start in 30 s"; }
base="http://$addr"
say "server $server_pid on $base"

# --- Hooks: a session for /me and /logout, codes and reset tokens for recovery ------
# These stand in for a user: one who logs in, one who reads the mail the console notifier
# "sent", one whose browser kept the reset_token cookie.
# - The auth provider registers an account, logs it in and sends the session as a bearer
#   token; schemathesis logs in again when a token stops working (after /logout, or
#   after a reset revoked it).
# - /validate-otp: when a request names an account this run registered and carries a
#   well-formed code, the code becomes the latest one printed for that account.
# - /reset-password: when a request names such an account and has no token in its body,
#   it gets a fresh token (forgot-password, the printed code, validate-otp) in the
#   `reset_token` cookie, the way a browser would send it.
# So the success answers of both, with their Set-Cookie, are checked too; every other
# request goes out as schemathesis generated it.
cat >"$work/hooks.py" <<'PY'
import itertools
import json
import os
import re
import time
import unicodedata
import urllib.error
import urllib.request

import schemathesis

BASE = os.environ["GATEHOUSE_BASE_URL"]
SERVER_LOG = os.environ["GATEHOUSE_SERVER_LOG"]
PASSWORD = "a long and uncommon passphrase"
# Recovery codes only: registration also prints verification codes for the same addresses.
CODE_LINE = re.compile(
    r"DEV ONLY, not delivered: \w+ to (\S+): Your password reset code: .*one-time code is (\d{6})"
)
serial = itertools.count()
# Normalised identifier -> the addresses (email, phone) its codes are sent to.
accounts = {}
# Addresses -> how many codes were asked for so far (as far as this run knows).
requested = {}


def fold(identifier):
    return unicodedata.normalize("NFKC", identifier.strip()).lower()


def remember(body):
    email, phone = body.get("email"), body.get("phone")
    addresses = []
    if isinstance(email, str) and email.strip():
        addresses.append(unicodedata.normalize("NFKC", email.strip()))
    if isinstance(phone, str) and phone.strip():
        addresses.append(re.sub(r"[ .()-]", "", phone.strip()))
    for key in (body.get("username"), email, phone):
        if isinstance(key, str) and key.strip():
            accounts[fold(key)] = tuple(addresses)


def known(identifier):
    return accounts.get(fold(identifier)) if isinstance(identifier, str) else None


def post(path, body):
    request = urllib.request.Request(
        BASE + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def codes_for(addresses):
    codes = []
    with open(SERVER_LOG, encoding="utf-8", errors="replace") as log:
        for line in log:
            match = CODE_LINE.search(line)
            if match and match.group(1) in addresses:
                codes.append(match.group(2))
    return codes


def latest_code(addresses):
    """The code of the latest /forgot-password for these addresses, once printed: a new
    code cancels the older ones."""
    wanted = requested.get(addresses, 0)
    deadline = time.monotonic() + 5.0
    codes = codes_for(addresses)
    while wanted and len(codes) < wanted and time.monotonic() < deadline:
        time.sleep(0.02)
        codes = codes_for(addresses)
    return codes[-1] if codes else None


def fresh_reset_token(identifier, addresses):
    status, _, _ = post("/forgot-password", {"identifier": identifier})
    if status != 200:
        return None
    requested[addresses] = requested.get(addresses, 0) + 1
    code = latest_code(addresses)
    if code is None:
        return None
    status, _, body = post("/validate-otp", {"identifier": identifier, "otp": code})
    if status != 200:
        return None
    return json.loads(body)["reset_token"]


@schemathesis.auth(refresh_interval=5).apply_to(path=["/me", "/logout"])
class SessionAuth:
    def get(self, case, context):
        # A fresh account each time: a fuzzed reset may have changed an older one's password.
        account = {
            "username": f"schemathesis{next(serial)}",
            "email": f"schemathesis{next(serial)}@example.com",
            "password": PASSWORD,
        }
        status, _, _ = post("/register", account)
        if status != 201:
            raise RuntimeError(f"/register answered {status}")
        remember(account)
        status, headers, _ = post(
            "/login", {"identifier": account["username"], "password": PASSWORD}
        )
        if status != 200:
            raise RuntimeError(f"/login answered {status}")
        for cookie in headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            if name.strip() == "session":
                return rest.split(";", 1)[0]
        raise RuntimeError("/login set no session cookie")

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.hook
def after_call(context, case, response):
    if not isinstance(case.body, dict):
        return
    if case.operation.path == "/register" and response.status_code == 201:
        remember(case.body)
    if case.operation.path == "/forgot-password" and response.status_code == 200:
        addresses = known(case.body.get("identifier"))
        if addresses:
            requested[addresses] = requested.get(addresses, 0) + 1


@schemathesis.hook
def before_call(context, case, kwargs):
    if not isinstance(case.body, dict):
        return
    addresses = known(case.body.get("identifier"))
    if not addresses:
        return
    if case.operation.path == "/validate-otp":
        otp = case.body.get("otp")
        if isinstance(otp, str) and re.fullmatch(r"[0-9]{6}", otp.strip()):
            code = latest_code(addresses)
            if code is not None:
                case.body = {**case.body, "otp": code}
    elif case.operation.path == "/reset-password":
        token = case.body.get("reset_token")
        if token is None or (isinstance(token, str) and not token.strip()):
            token = fresh_reset_token(case.body["identifier"], addresses)
            if token is not None:
                case.cookies = {**(case.cookies or {}), "reset_token": token}
PY

# --- The run --------------------------------------------------------------------------
report="$work/report"
say "running: max $MAX_EXAMPLES examples per operation and phase, seed $SEED, time limit ${TIME_LIMIT}s"
set +e
# From inside $work, so that nothing (.hypothesis, .schemathesis) lands in the tree.
(cd "$work" && GATEHOUSE_BASE_URL="$base" GATEHOUSE_SERVER_LOG="$work/server.log" \
  SCHEMATHESIS_HOOKS="$work/hooks.py" \
  timeout --kill-after=10 "$TIME_LIMIT" "$root/$VENV/bin/st" run "$base/openapi.json" \
  --checks all \
  --exclude-checks positive_data_acceptance \
  --phases examples,coverage,fuzzing,stateful \
  --mode all \
  --max-examples "$MAX_EXAMPLES" \
  --seed "$SEED" \
  --workers 1 \
  --request-timeout 20 \
  --max-failures 50 \
  --no-color \
  --generation-database none \
  --report ndjson --report-dir "$report") \
  2>&1 | tee "$work/st.log"
status=${PIPESTATUS[0]}
set -e

# Any 5xx in the server's own log is a failure even when schemathesis missed it.
if grep -qE 'status=5[0-9][0-9]|internal error|panicked' "$work/server.log"; then
  say "the server logged a 5xx or a panic:"
  grep -E 'status=5[0-9][0-9]|internal error|panicked' "$work/server.log" | head -20 >&2
  [ "$status" = 0 ] && status=1
fi

# The summary says "Test cases:" and, on the next line, "N generated, N passed, ...".
cases=$(grep -A1 '^Test cases:' "$work/st.log" | sed -n 's/^ *\([0-9][0-9]*\) generated.*/\1/p' | tail -1)

say "statuses answered, per operation:"
# What the run reached, from the report: statuses per operation. Every operation must
# have been answered with its success status at least once, so that the conformance of
# success bodies and their Set-Cookie headers is really checked (and stays checked).
coverage_ok=1
"$VENV/bin/python" - "$report" <<'PY' || coverage_ok=0
import collections
import glob
import json
import sys
from urllib.parse import urlsplit

SUCCESS = {
    ("POST", "/register"): 201,
    ("POST", "/login"): 200,
    ("GET", "/me"): 200,
    ("POST", "/logout"): 200,
    ("POST", "/forgot-password"): 200,
    ("POST", "/validate-otp"): 200,
    ("POST", "/reset-password"): 200,
    ("GET", "/healthz"): 200,
    ("GET", "/readyz"): 200,
}
seen = collections.defaultdict(collections.Counter)
for path in glob.glob(f"{sys.argv[1]}/*.ndjson"):
    with open(path, encoding="utf-8") as events:
        for line in events:
            event = json.loads(line).get("ScenarioFinished")
            if not event:
                continue
            for interaction in (event["recorder"].get("interactions") or {}).values():
                response = interaction.get("response")
                if response:
                    request = interaction["request"]
                    key = (request["method"], urlsplit(request["uri"]).path)
                    seen[key][response["status_code"]] += 1
def show(label, counter):
    statuses = ", ".join(f"{s}×{n}" for s, n in sorted(counter.items()))
    print(f"[schemathesis]   {label:<26} {statuses}", file=sys.stderr)


missing = []
for key in sorted(SUCCESS, key=lambda k: (k[1], k[0])):
    show(f"{key[0]} {key[1]}", seen[key])
    if not seen[key][SUCCESS[key]]:
        missing.append(f"{key[0]} {key[1]} {SUCCESS[key]}")
# Undocumented methods on documented paths (the unsupported_method check), and paths
# the document does not have.
show("other methods and paths", sum((seen[k] for k in seen if k not in SUCCESS), collections.Counter()))
if missing:
    print(f"[schemathesis] never reached: {', '.join(missing)}", file=sys.stderr)
    sys.exit(1)
PY
elapsed=$(($(date +%s) - started))
say "generated test cases: ${cases:-unknown} (minimum $MIN_CASES), wall time ${elapsed}s"
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
  die "schemathesis ran over its ${TIME_LIMIT}s time limit"
fi
if [ "$status" != 0 ]; then
  say "server log tail:"
  tail -n 40 "$work/server.log" >&2
  die "schemathesis found failures (exit $status)"
fi
if [ "$coverage_ok" != 1 ]; then
  die "some operation never answered its success status; see the table above"
fi
if [ -z "$cases" ] || [ "$cases" -lt "$MIN_CASES" ]; then
  die "only ${cases:-an unknown number of} test cases were generated; at least $MIN_CASES are required"
fi
say "passed"
# The closing line in the form CI reads: each generated case is one test.
echo "schemathesis: $cases passed, 0 failed"
