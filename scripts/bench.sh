#!/usr/bin/env bash
# scripts/bench.sh — measure every httpbus backend next to its raw client, in
# one run per backend and concurrency, and write BENCHMARKS.md at the repo root.
#
# Needs the brokers running (scripts/start-brokers.sh, or CI's services):
#   NATS      $HTTPBUS_TEST_NATS_URL             (nats://127.0.0.1:4222)
#   AMQP      $HTTPBUS_TEST_AMQP_URL             (amqp://guest:guest@127.0.0.1:5672/)
#   STOMP     $HTTPBUS_TEST_STOMP_ACTIVEMQ_ADDR  (127.0.0.1:61614)
#             $HTTPBUS_TEST_STOMP_RABBITMQ_ADDR  (127.0.0.1:61613)
#   MQTT      $HTTPBUS_TEST_MQTT_URL             (mqtt://127.0.0.1:1883)
#
# Knobs (environment):
#   BENCH_DURATION   measured time per run, shared by httpbus and raw (10s)
#   BENCH_WARMUP     warm-up per runner (1s)
#   BENCH_ROUNDS     alternating rounds per run (3)
#   BENCH_CALLERS    concurrencies (1 32)
#   BENCH_SIZE       request and reply body, bytes (256)
#   BENCH_BACKENDS   mem tcp nats amqp stomp-activemq stomp-rabbitmq mqtt
#   BENCH_TCP_ADDR   where the tcp backend listens (127.0.0.1:18080)
#   BENCH_GOTEST_TIME  -benchtime of the go test benchmarks (1s)
#   BENCH_BIG_SIZE   body of the peak-RSS runs (67108864 = 64 MiB)
#   BENCH_OUT        output file (BENCHMARKS.md at the repo root)
#
# Exit status: 0 when every run worked, 1 when any failed (the failure is
# still recorded in the table).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

duration=${BENCH_DURATION:-10s}
warmup=${BENCH_WARMUP:-1s}
rounds=${BENCH_ROUNDS:-3}
callers=${BENCH_CALLERS:-1 32}
size=${BENCH_SIZE:-256}
backends=${BENCH_BACKENDS:-mem tcp nats amqp stomp-activemq stomp-rabbitmq mqtt}
tcp_addr=${BENCH_TCP_ADDR:-127.0.0.1:18080}
gotest_time=${BENCH_GOTEST_TIME:-1s}
big=${BENCH_BIG_SIZE:-67108864}
out=${BENCH_OUT:-$root/BENCHMARKS.md}
nats_url=${HTTPBUS_TEST_NATS_URL:-nats://127.0.0.1:4222}
amqp_url=${HTTPBUS_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
activemq=${HTTPBUS_TEST_STOMP_ACTIVEMQ_ADDR:-127.0.0.1:61614}
rabbitstomp=${HTTPBUS_TEST_STOMP_RABBITMQ_ADDR:-127.0.0.1:61613}
mqtt_url=${HTTPBUS_TEST_MQTT_URL:-mqtt://127.0.0.1:1883}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bin=$work/httpbus
failed=0

log() { echo "bench.sh: $*" >&2; }

log "building cmd/httpbus"
go build -o "$bin" ./cmd/httpbus

# backend_url NAME → the -url for it; backend_label NAME → its table name.
backend_url() {
	case $1 in
	mem) echo "mem://bench" ;;
	tcp) echo "tcp://$tcp_addr" ;;
	nats) echo "$nats_url" ;;
	amqp) echo "$amqp_url" ;;
	stomp-activemq) echo "stomp://$activemq" ;;
	stomp-rabbitmq) echo "stomp://$rabbitstomp" ;;
	mqtt) echo "$mqtt_url" ;;
	*) log "unknown backend $1"; return 1 ;;
	esac
}
backend_label() {
	case $1 in
	stomp-activemq) echo "stomp" ;;
	stomp-rabbitmq) echo "stomp" ;;
	*) echo "$1" ;;
	esac
}
redact() { sed -E 's#(://[^:/@]*:)[^@]*@#\1xxxxx@#g'; }

rows=$work/rows.md
: >"$rows"
for b in $backends; do
	url=$(backend_url "$b")
	raw=-raw
	[ "$b" = mem ] && raw= # inmem has no raw twin
	for c in $callers; do
		log "$b, $c callers, $size B, $duration"
		set +e
		"$bin" bench -url "$url" -c "$c" -d "$duration" -warmup "$warmup" -rounds "$rounds" \
			-size "$size" $raw -service "httpbus-bench-$b" -label "$(backend_label "$b")" -md \
			>"$work/row" 2>"$work/err"
		rc=$?
		set -e
		if [ $rc -eq 0 ]; then
			cat "$work/row" >>"$rows"
		else
			failed=1
			msg=$(grep '^httpbus' "$work/err" | head -n 1 | redact | tr '|' '/' | cut -c1-200)
			[ -n "$msg" ] || msg=$(grep -v '^$' "$work/err" | tail -n 1 | redact | tr '|' '/' | cut -c1-200)
			log "$b -c $c failed (exit $rc): $msg"
			echo "| $(backend_label "$b") ($b) | $c | failed: $msg | | | | | | | | |" >>"$rows"
		fi
	done
done

log "go test -bench (frame codec, inmem round trip)"
gobench=$work/gobench.txt
set +e
go test -run '^$' -bench . -benchmem -benchtime "$gotest_time" ./transport/ ./inmem/ >"$gobench" 2>&1
rc=$?
set -e
if [ $rc -ne 0 ]; then
	failed=1
	log "go test -bench failed"
fi
benchrows=$(awk '
	/^pkg:/ { pkg = $2; sub(/.*\//, "", pkg) }
	/^Benchmark/ {
		name = $1; sub(/-[0-9]+$/, "", name)
		ns = ""; mbs = ""; bop = ""; allocs = ""
		for (i = 3; i < NF; i++) {
			if ($(i+1) == "ns/op") ns = $i
			if ($(i+1) == "MB/s") mbs = $i
			if ($(i+1) == "B/op") bop = $i
			if ($(i+1) == "allocs/op") allocs = $i
		}
		printf "| %s | %s | %s | %s | %s | %s |\n", pkg, name, ns, (mbs == "" ? "—" : mbs), bop, allocs
	}' "$gobench")

# Peak RSS for one big body through mem and tcp (caller and server in one
# process, -c 1), next to a 256 B baseline.
timebin=/usr/bin/time
if [ ! -x "$timebin" ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		log "installing the time package for /usr/bin/time -v"
		apt-get install -y -qq time >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq time >/dev/null 2>&1; } || true
	fi
fi
rssrows=$work/rss.md
: >"$rssrows"
rss_run() { # label url size maxbody
	local label=$1 url=$2 sz=$3
	set +e
	"$timebin" -v "$bin" bench -url "$url" -c 1 -n 3 -d 60s -warmup 0 -rounds 1 -size "$sz" \
		-service "httpbus-bench-rss" -json >"$work/rss.json" 2>"$work/rss.err"
	local rc=$?
	set -e
	local kb reqs
	kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/rss.err")
	reqs=$(awk -F': ' '/"requests"/ { gsub(/[ ,]/, "", $2); print $2; exit }' "$work/rss.json")
	if [ $rc -ne 0 ] || [ -z "$kb" ]; then
		failed=1
		echo "| $label | $sz | failed (exit $rc): $(grep -v '^$' "$work/rss.err" | head -n 1 | tr '|' '/' | cut -c1-150) | | |" >>"$rssrows"
		return
	fi
	echo "| $label | $sz | $((kb / 1024)) | $(awk -v k="$kb" -v s="$sz" 'BEGIN { if (s >= 1048576) printf "%.2f", k * 1024 / s; else print "—" }') | ${reqs:-?} |" >>"$rssrows"
}
if [ -x "$timebin" ]; then
	for b in mem tcp; do
		case " $backends " in *" $b "*) ;; *) continue ;; esac
		url=$(backend_url "$b")
		big_url=$url
		[ "$b" = tcp ] && big_url="$url?max_body_bytes=$((big * 2))"
		log "peak RSS, $b, $size B and $big B"
		rss_run "$b" "$url" "$size"
		rss_run "$b" "$big_url" "$big"
	done
	# tcp again with the echo server in its own process: each side's own
	# peak RSS.
	case " $backends " in *" tcp "*)
		log "peak RSS, tcp, caller and server in separate processes, $big B"
		big_url="$(backend_url tcp)?max_body_bytes=$((big * 2))"
		"$timebin" -v "$bin" serve -url "$big_url" -service httpbus-bench-rss -max-body $((big * 2)) \
			>"$work/serve.out" 2>"$work/serve.err" &
		spid=$!
		for _ in $(seq 50); do grep -q serving "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
		set +e
		"$timebin" -v "$bin" bench -url "$big_url" -target httpbus-bench-rss -c 1 -n 3 -d 60s -warmup 0 -rounds 1 \
			-size "$big" -json >"$work/rss.json" 2>"$work/rss.err"
		rc=$?
		# time(1) ignores SIGINT while it waits: signal the server itself.
		kill -TERM $(ps -o pid= --ppid "$spid") 2>/dev/null || kill -TERM "$spid"
		wait "$spid" || true
		set -e
		ckb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/rss.err")
		skb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/serve.err")
		if [ $rc -eq 0 ] && [ -n "$ckb" ] && [ -n "$skb" ]; then
			for side in "caller process:$ckb" "server process:$skb"; do
				kb=${side##*:}
				echo "| tcp, $(echo "$side" | cut -d: -f1) only | $big | $((kb / 1024)) | $(awk -v k="$kb" -v s="$big" 'BEGIN { printf "%.2f", k * 1024 / s }') | 3 |" >>"$rssrows"
			done
		else
			failed=1
			echo "| tcp, separate processes | $big | failed (exit $rc) | | |" >>"$rssrows"
		fi
		;;
	esac
else
	echo "| — | — | /usr/bin/time not available (Debian package \`time\`) | | |" >>"$rssrows"
fi

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo unknown)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null || echo unknown)
brokers=$(grep -o '([^()]*/[^()]*)\|(nats-server [^)]*)\|(RabbitMQ [^)]*)' "$rows" | sort -u | tr -d '()' | paste -sd ';' - | sed 's/;/; /g' || true)
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo " (with uncommitted changes)" || true)

{
	cat <<EOF
# Benchmarks

Generated by \`scripts/bench.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit \`$rev\`$dirty. Do not edit by hand.

Each row is **one run** of \`httpbus bench\`: an echo service and closed-loop
callers in one process, $size B request and reply bodies. With a raw twin, the
run alternates httpbus and the broker's bare client library in $rounds rounds
($duration measured in all, per side, after a $warmup warm-up each), so both
see the same machine noise; the ratio httpbus/raw is the figure that matters
(the raw figure is the practical limit). CPU µs/req is the process's user+system
time (getrusage) per request: caller and echo server, not the broker.

Raw twins: nats — nats.go \`RequestWithContext\` against a \`QueueSubscribe\`
responder; amqp — amqp091 publish with direct reply-to and correlation ids, the
responder consuming a queue (prefetch 128, ack after reply); stomp — go-stomp
SEND with \`reply-to: /temp-queue/…\` and \`correlation-id\`, the responder
subscribed with client-individual acks (ack after reply); mqtt — paho.golang
QoS 1 publish with Response Topic and Correlation Data against a
shared-subscription responder (both dialled with TCP_QUICKACK, as httpbus is);
tcp — net/http client and server on loopback. mem has no raw twin.

## Machine

- CPU: $cpu, $(nproc) cores (\`nproc\`); memory $mem; shared with other work while measuring
- Kernel: $(uname -sr)
- Go: $(go version | awk '{ print $3, $4 }')
- Brokers (as they report themselves): ${brokers:-none reached}

## Request/reply, httpbus vs raw client

Targets (issue 6; mqtt: issue 14): ratio req/s at 32 callers ≥ 0.85 (nats) or
≥ 0.90 (amqp, stomp, tcp, mqtt); ratio p50 at 1 caller ≤ 1.15 (nats) or ≤ 1.10
(others).

$("$bin" bench -md-header)
$(cat "$rows")

## Frame codec and inmem round trip (\`go test -bench . -benchmem\`)

Allocations per operation are the figure to drive down: every broker backend
pays encode + decode on both sides of every call.

| package | benchmark | ns/op | MB/s | B/op | allocs/op |
|---|---|---:|---:|---:|---:|
$benchrows

## Memory: peak RSS for one large body

\`/usr/bin/time -v httpbus bench -url URL -c 1 -n 3 -warmup 0 -size N\`: one
caller, 4 sequential calls (a first check, then 3 measured); caller and echo
server in one process, so the body exists on both sides; "× body" is peak RSS
divided by the body size (issue 6 asks for about 2× heap, per side). The
"only" rows run the tcp echo server as \`httpbus serve\` in its own process
(bench -target), so each side's peak is seen alone; mem cannot be split.

| backend | body bytes | peak RSS MiB | × body | requests done |
|---|---:|---:|---:|---:|
$(cat "$rssrows")

## Reproduce

\`\`\`sh
scripts/start-brokers.sh          # or have NATS, RabbitMQ (+STOMP) and ActiveMQ on 127.0.0.1
BENCH_DURATION=$duration scripts/bench.sh
# one backend by hand:
go build -o /tmp/httpbus ./cmd/httpbus
/tmp/httpbus bench -url nats://127.0.0.1:4222 -c 32 -d 10s -size 256 -raw
\`\`\`
EOF
} | redact >"$out"
log "wrote $out"
exit $failed
