#!/usr/bin/env bash
# Runs Autobahn|Testsuite's fuzzingclient against switchboard's /echo and fails on any case
# whose behaviour is not OK (INFORMATIONAL and UNIMPLEMENTED aside).
#
#   scripts/autobahn.sh            cases 1-11 (under a minute; part of scripts/test.sh)
#   scripts/autobahn.sh full       all 517 cases, including compression 12.x/13.x (12-40 min)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-core}
AB_DIR=${AUTOBAHN_DIR:-$PWD/target/autobahn}
SITE=$AB_DIR/site
mkdir -p "$AB_DIR"

py2() {
  if command -v pyenv >/dev/null 2>&1 && pyenv versions --bare | grep -qx 2.7.18; then
    PYENV_VERSION=2.7.18 pyenv exec python "$@"
  elif [ -x "$HOME/.pyenv/versions/2.7.18/bin/python" ]; then
    "$HOME/.pyenv/versions/2.7.18/bin/python" "$@"
  elif command -v python2.7 >/dev/null 2>&1; then
    python2.7 "$@"
  else
    echo "autobahn: Python 2.7 is needed (pyenv 2.7.18 or python2.7)" >&2
    return 1
  fi
}

if [ ! -f "$SITE/.installed" ]; then
  echo "== installing autobahntestsuite into $SITE"
  py2 -m pip install -q --disable-pip-version-check --target "$SITE" autobahntestsuite==25.10.1 2>&1 \
    | grep -v -e DEPRECATION -e 'Target directory' || true
  touch "$SITE/.installed"
fi

cargo build --release --locked -q
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
./target/release/switchboard serve --tcp off --udp off --mqtt off --grpc off --http "127.0.0.1:$port" --log warn \
  > "$AB_DIR/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
python3 - "$port" <<'PY'
import socket, sys, time
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close()
        break
    except OSError:
        time.sleep(0.1)
PY

if [ "$mode" = full ]; then cases='["*"]'; else cases='["1.*","2.*","3.*","4.*","5.*","6.*","7.*","9.*","10.*","11.*"]'; fi
rm -rf "$AB_DIR/reports"
cat > "$AB_DIR/fuzzingclient.json" <<JSON
{
  "outdir": "$AB_DIR/reports/servers",
  "servers": [{"agent": "switchboard", "url": "ws://127.0.0.1:$port/echo"}],
  "cases": $cases,
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON
echo "== autobahn fuzzingclient ($mode) against ws://127.0.0.1:$port/echo"
(cd "$AB_DIR" && timeout 3600 bash -c "$(declare -f py2); py2 -c 'import site,sys; site.addsitedir(\"$SITE\"); sys.argv=[\"wstest\",\"-m\",\"fuzzingclient\",\"-s\",\"fuzzingclient.json\"]; from autobahntestsuite.wstest import run; run()'" \
  > "$AB_DIR/wstest.log" 2>&1) || { tail -20 "$AB_DIR/wstest.log"; exit 1; }

python3 - "$AB_DIR/reports/servers/index.json" <<'PY'
import json, sys, collections
index = json.load(open(sys.argv[1]))
results = index["switchboard"]
counts = collections.Counter()
bad = []
for case, r in sorted(results.items(), key=lambda kv: [int(x) for x in kv[0].split(".")]):
    b, c = r["behavior"], r.get("behaviorClose", "OK")
    counts[b] += 1
    if b not in ("OK", "INFORMATIONAL", "UNIMPLEMENTED") or c not in ("OK", "INFORMATIONAL", "UNIMPLEMENTED"):
        bad.append((case, b, c))
total = sum(counts.values())
print("autobahn: %d cases: %s" % (total, ", ".join("%s %d" % kv for kv in sorted(counts.items()))))
for case, b, c in bad:
    print("  case %s: behavior %s, close %s" % (case, b, c))
ok = total - len(bad)
print("%d passed, %d failed" % (ok, len(bad)))
sys.exit(1 if bad or total == 0 else 0)
PY
