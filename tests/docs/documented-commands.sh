#!/usr/bin/env bash
# Runs the commands README.md, docs/GETTING-STARTED.md and docs/SERVING.md document, from the repository root, as a
# user types them (plus --no-build and the configuration the tests were built with, so nothing is rebuilt here):
# the README's two commands, the Quickstart's --help, the web API's train-demo-model and --ModelPath with relative
# paths (they resolve against the directory the command is typed in), a bad model at start-up (one line, exit 1), and
# train-demo-model's bad inputs (one line, exit 1 or 2).
# Usage: tests/docs/documented-commands.sh <Debug|Release>. Needs ../shared (the demo model's training file).
set -euo pipefail
cd "$(dirname "$0")/../.."
config="${1:-Debug}"
fail() { echo "FAIL: $*" >&2; exit 1; }

# README: the two commands, at the very top.
head -6 README.md | grep -qxF 'dotnet run --project samples/RetriKT.Quickstart -c Release    # the main job: the whole RetriKT pipeline, one command' \
  || fail "README.md does not start with the Quickstart command"
head -6 README.md | grep -q '^dotnet test RetriKT.MLNet.sln ' || fail "README.md does not start with the test command"
grep -q 'docs/GETTING-STARTED.md' README.md || fail "README.md does not link docs/GETTING-STARTED.md"

# The Quickstart's options.
help=$(dotnet run --project samples/RetriKT.Quickstart -c "$config" --no-build -- --help) || fail "Quickstart --help exited $?"
grep -q -- '--teacher' <<<"$help" || fail "Quickstart --help lists no --teacher"

# SERVING.md: train-demo-model and --ModelPath with paths relative to the repository root.
work=retrikt-quickstart/docs-check   # git-ignored
rm -rf "$work"; mkdir -p "$work"
dotnet run --project samples/RetriKT.WebApi -c "$config" --no-build -- train-demo-model ../shared/data/SST-2/k-shot/16-13/train.tsv "$work/demo-model.zip" 2 >/dev/null \
  || fail "train-demo-model with relative paths exited $?"
[ -f "$work/demo-model.zip" ] || fail "train-demo-model did not write $work/demo-model.zip (relative to the repository root)"

# Port 0: the OS picks a free port and the server logs it. A random fixed port (20000-39999) could be taken: it overlaps
# Linux's ephemeral range (32768-60999), where the test projects that run beside this one hold their servers and clients.
dotnet run --project samples/RetriKT.WebApi -c "$config" --no-build -- --ModelPath "$work/demo-model.zip" --urls "http://127.0.0.1:0" >"$work/server.log" 2>&1 &
server=$!
stop() { pkill -P "$server" 2>/dev/null || true; kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
trap stop EXIT
url=""; health=""
for _ in $(seq 1 240); do
  [ -n "$url" ] || url=$(grep -o 'Now listening on: http://127\.0\.0\.1:[0-9]*' "$work/server.log" 2>/dev/null | head -1 | sed 's/^Now listening on: //' || true)
  if [ -n "$url" ]; then
    health=$(curl -s "$url/healthz" || true)
    [ "$health" = Healthy ] && break
  fi
  kill -0 "$server" 2>/dev/null || fail "the web API with --ModelPath $work/demo-model.zip exited: $(tail -3 "$work/server.log")"
  sleep 0.5
done
[ -n "$url" ] || fail "the web API did not log 'Now listening on: http://127.0.0.1:<port>': $(tail -3 "$work/server.log")"
[ "$health" = Healthy ] || fail "/healthz said '$health'"
curl -s -XPOST "$url/predict" -H 'content-type: application/json' -d '{"text":"a wonderful , moving film ."}' \
  | grep -q '"modelGeneration":1' || fail "/predict did not answer"
stop; trap - EXIT

# A bad model at start-up: one line on stderr, exit code 1.
set +e
dotnet run --project samples/RetriKT.WebApi -c "$config" --no-build -- --ModelPath "$work/missing.zip" --urls "http://127.0.0.1:0" >/dev/null 2>"$work/err.txt"
code=$?
set -e
[ "$code" = 1 ] || fail "a missing model exited $code, expected 1"
[ "$(wc -l <"$work/err.txt")" = 1 ] || fail "a missing model printed $(wc -l <"$work/err.txt") lines on stderr, expected 1"
grep -q "missing.zip' does not exist" "$work/err.txt" || fail "unexpected error: $(cat "$work/err.txt")"

# train-demo-model with a file, a count or arguments it cannot use: one line on stderr, no model written.
set +e
dotnet run --project samples/RetriKT.WebApi -c "$config" --no-build -- train-demo-model "$work/missing.tsv" "$work/none.zip" 2 >/dev/null 2>"$work/err.txt"
code=$?
dotnet run --project samples/RetriKT.WebApi -c "$config" --no-build -- train-demo-model ../shared/data/SST-2/k-shot/16-13/train.tsv "$work/none.zip" ten >/dev/null 2>"$work/err2.txt"
code2=$?
dotnet run --project samples/RetriKT.WebApi -c "$config" --no-build -- train-demo-model "$work/none.zip" >/dev/null 2>"$work/err3.txt"
code3=$?
set -e
[ "$code" = 1 ] && [ "$(wc -l <"$work/err.txt")" = 1 ] && grep -q "missing.tsv' does not exist" "$work/err.txt" \
  || fail "train-demo-model on a missing file: exit $code, stderr $(cat "$work/err.txt")"
[ "$code2" = 2 ] && [ "$(wc -l <"$work/err2.txt")" = 1 ] && grep -q "iterations must be a positive integer, found 'ten'" "$work/err2.txt" \
  || fail "train-demo-model with iterations 'ten': exit $code2, stderr $(cat "$work/err2.txt")"
[ "$code3" = 2 ] && [ "$(wc -l <"$work/err3.txt")" = 1 ] && grep -q "usage: train-demo-model <train.tsv> <model.zip> \[iterations\]" "$work/err3.txt" \
  || fail "train-demo-model with one argument (it used to start the server): exit $code3, stderr $(cat "$work/err3.txt")"
[ ! -f "$work/none.zip" ] || fail "train-demo-model wrote a model after an error"
rm -rf "$work"
echo "documented commands: ok"
