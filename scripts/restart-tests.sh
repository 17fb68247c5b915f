#!/usr/bin/env bash
# Broker restart tests: they stop and start the shared brokers (RabbitMQ,
# ActiveMQ, NATS), so they run alone, one package at a time, after the main
# test run. The tests are gated by HTTPBUS_TEST_RESTART=1 and named *Restart*.
# Afterwards every broker is checked (and started) again.
set -euo pipefail
cd "$(dirname "$0")/.."
set -a; eval "$(scripts/start-brokers.sh)"; set +a
export HTTPBUS_REQUIRE_BROKERS=1 HTTPBUS_TEST_RESTART=1
log=$(mktemp)
status=0
go test -race -count=1 -p 1 -timeout 8m -run 'Restart' -v ./nats/ ./amqp/ ./stomp/ >"$log" 2>&1 || status=$?
grep -E '^(--- |ok|FAIL|PASS)|restart' "$log" || true
[ $status -eq 0 ] || tail -50 "$log"
rm -f "$log"
scripts/start-brokers.sh >/dev/null
exit $status
