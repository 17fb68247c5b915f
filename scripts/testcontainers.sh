#!/usr/bin/env bash
# testcontainers.sh — prove the testcontainers-go path of internal/brokertest
# for real: start a Docker engine, build a FROM scratch image holding a
# statically linked nats-server, and run the nats conformance suite with
# HTTPBUS_TEST_NATS_URL unset, so that brokertest.NATS starts that image
# through testcontainers-go (host network, 127.0.0.1 only, no Ryuk).
#
#   scripts/testcontainers.sh          # needs root; CI runs it under `timeout 240`
#   scripts/testcontainers.sh --all    # also RabbitMQ (AMQP, STOMP) and ActiveMQ
#
# --all (not in CI: about 4 minutes the first time, 1 minute once the images
# exist in the data root) builds RabbitMQ and ActiveMQ images from Debian 12
# packages with debootstrap (no image registry needed), then runs
# internal/brokertest's TestContainerBrokers, which starts every broker
# through the testcontainers-go step and speaks its protocol to it.
#
# What it does, in order:
#   1. installs docker.io with apt-get if dockerd is missing;
#   2. starts `dockerd --iptables=false --bridge=none` in the background on its
#      own socket, data root and pidfile (no bridge network is ever created;
#      the only network containers use is the host's, and brokers listen on
#      127.0.0.1), and waits until it answers;
#   3. builds nats-server from the module pinned in go.mod (CGO_ENABLED=0, so
#      `file` reports it statically linked) and a FROM scratch image with it;
#   4. runs `go test -run 'TestConformance$' ./nats/` with
#      HTTPBUS_TEST_NATS_IMAGE set to that image and HTTPBUS_REQUIRE_BROKERS=1,
#      and checks in the log that the broker came from testcontainers-go
#      (not from the embedded fallback);
#   5. stops dockerd by its PID (trap on exit, also on failure).
#
# If dockerd cannot start here, it prints the exact error and
#   SKIPPED testcontainers proof: <error>
# and exits 0: the environment-variable path carries CI then.
#
# Environment: DOCKERD_START_TIMEOUT seconds [30], HTTPBUS_TC_ROOT [/var/lib/httpbus-docker],
# HTTPBUS_TC_RUN [/run/httpbus-docker].
set -euo pipefail
cd "$(dirname "$0")/.."
all=0
if [ "${1:-}" = "--all" ]; then
	all=1
fi
export GOFLAGS=${GOFLAGS:--buildvcs=false}

root=${HTTPBUS_TC_ROOT:-/var/lib/httpbus-docker}
run=${HTTPBUS_TC_RUN:-/run/httpbus-docker}
sock="$run/docker.sock"
pidfile="$run/dockerd.pid"
log="$run/dockerd.log"
timeout=${DOCKERD_START_TIMEOUT:-30}
nats_version=$(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)
image="httpbus/nats-scratch:${nats_version#v}"
work=$(mktemp -d)

say() { printf 'testcontainers.sh: %s\n' "$*" >&2; }

skip() {
	echo "SKIPPED testcontainers proof: $*"
	exit 0
}

cleanup() {
	local rc=$?
	if [ -s "$pidfile" ]; then
		local pid
		pid=$(cat "$pidfile")
		if kill -0 "$pid" 2>/dev/null; then
			say "stopping dockerd (pid $pid)"
			kill "$pid" 2>/dev/null || true
			for _ in $(seq 1 100); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
			if kill -0 "$pid" 2>/dev/null; then
				say "dockerd (pid $pid) still running after 10s; sending KILL"
				kill -9 "$pid" 2>/dev/null || true
			fi
		fi
		rm -f "$pidfile"
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT

if [ "$(id -u)" != 0 ]; then
	skip "needs root to install and start dockerd (uid $(id -u))"
fi

# 1. docker.io
if ! command -v dockerd >/dev/null 2>&1; then
	say "installing docker.io"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >"$work/apt.log" 2>&1; then
		apt-get update -q >>"$work/apt.log" 2>&1 || true
		if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >>"$work/apt.log" 2>&1; then
			tail -5 "$work/apt.log" >&2
			skip "apt-get install docker.io failed: $(tail -1 "$work/apt.log")"
		fi
	fi
fi
# The CLI from the same package as the daemon (a newer one may also be on PATH).
docker=$(command -v /usr/bin/docker || command -v docker)

# 2. dockerd, loopback and host network only
mkdir -p "$root" "$run"
if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
	skip "a dockerd from an earlier run is still running (pid $(cat "$pidfile")); stop it first"
fi
start_dockerd() {
	: >"$log"
	dockerd --iptables=false --ip6tables=false --bridge=none \
		--host "unix://$sock" --pidfile "$pidfile" \
		--data-root "$root" --exec-root "$run/exec" \
		"$@" >>"$log" 2>&1 &
	local pid=$!
	for _ in $(seq 1 $((timeout * 10))); do
		if DOCKER_HOST="unix://$sock" "$docker" version >/dev/null 2>&1; then
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			return 1
		fi
		sleep 0.1
	done
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	return 1
}
dockerd_error() {
	grep -E 'level=(fatal|error)|failed to start daemon|Error starting daemon' "$log" | tail -1 || tail -1 "$log"
}
say "starting dockerd --iptables=false --bridge=none on $sock"
if ! start_dockerd; then
	err=$(dockerd_error)
	say "dockerd with the default storage driver failed: $err; retrying with vfs"
	if ! start_dockerd --storage-driver vfs; then
		tail -20 "$log" >&2
		skip "dockerd did not start: $(dockerd_error)"
	fi
fi
export DOCKER_HOST="unix://$sock"
say "dockerd $("$docker" version --format '{{.Server.Version}}') running, pid $(cat "$pidfile"), storage $("$docker" info --format '{{.Driver}}')"
if "$docker" network ls --format '{{.Driver}}' | grep -qx bridge; then
	echo "ERROR: a bridge network exists on this dockerd" >&2
	exit 1
fi

# 3. a static nats-server and a FROM scratch image
say "building nats-server $nats_version (CGO_ENABLED=0)"
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$work/nats-server" github.com/nats-io/nats-server/v2
file "$work/nats-server"
if ! file "$work/nats-server" | grep -q 'statically linked'; then
	echo "ERROR: nats-server is not statically linked" >&2
	exit 1
fi
cat >"$work/Dockerfile" <<'EOF'
FROM scratch
COPY nats-server /nats-server
ENTRYPOINT ["/nats-server"]
EOF
DOCKER_BUILDKIT=0 "$docker" build -q -t "$image" "$work" >/dev/null
say "built image $image ($("$docker" image inspect --format '{{.Size}}' "$image") bytes)"

# 4. the nats conformance suite through testcontainers-go
say "go test -run 'TestConformance\$' ./nats/ with HTTPBUS_TEST_NATS_URL unset, HTTPBUS_TEST_NATS_IMAGE=$image"
set +e
env -u HTTPBUS_TEST_NATS_URL \
	HTTPBUS_REQUIRE_BROKERS=1 \
	HTTPBUS_TEST_NATS_IMAGE="$image" \
	TESTCONTAINERS_RYUK_DISABLED=true \
	DOCKER_HOST="$DOCKER_HOST" \
	go test -count=1 -run 'TestConformance$' -v ./nats/ >"$work/test.log" 2>&1
rc=$?
set -e
grep -E '^(=== RUN|--- (PASS|FAIL|SKIP)|PASS|FAIL|ok )' "$work/test.log" | grep -v '=== RUN' | tail -25
grep -E 'brokertest: ' "$work/test.log" | head -3
if [ "$rc" != 0 ]; then
	tail -40 "$work/test.log" >&2
	echo "ERROR: conformance through testcontainers-go failed" >&2
	exit 1
fi
if ! grep -q 'NATS from testcontainers-go' "$work/test.log"; then
	echo "ERROR: the broker did not come from testcontainers-go (fell through to another step)" >&2
	exit 1
fi
passed=$(grep -c -- '--- PASS' "$work/test.log" || true)
skipped=$(grep -c -- '--- SKIP' "$work/test.log" || true)
leftover=$("$docker" ps -aq | wc -l)
echo "testcontainers proof: nats conformance passed via testcontainers-go, image $image ($passed PASS lines, $skipped SKIP lines); containers left: $leftover"

[ "$all" = 1 ] || exit 0

# 5. (--all) RabbitMQ and ActiveMQ images from Debian packages.
debian_image() { # tag package [docker import -c change...]
	local tag=$1 pkg=$2
	shift 2
	if "$docker" image inspect "$tag" >/dev/null 2>&1; then
		say "image $tag exists"
		return 0
	fi
	command -v debootstrap >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
	local rootfs="$work/rootfs-$pkg"
	say "debootstrap bookworm with $pkg (a few minutes)"
	if ! debootstrap --variant=minbase --include="$pkg" bookworm "$rootfs" http://deb.debian.org/debian >"$work/debootstrap-$pkg.log" 2>&1; then
		tail -5 "$work/debootstrap-$pkg.log" >&2
		echo "ERROR: debootstrap $pkg failed" >&2
		exit 1
	fi
	if [ "$pkg" = activemq ]; then
		# The official image's layout: configuration in /opt/apache-activemq/conf
		# (brokertest copies activemq.xml there), logging to the console.
		mkdir -p "$rootfs/opt/apache-activemq/conf" "$rootfs/opt/apache-activemq/data"
		printf '%s\n' \
			'log4j.rootLogger=INFO, stdout' \
			'log4j.logger.org.springframework=WARN' \
			'log4j.appender.stdout=org.apache.log4j.ConsoleAppender' \
			'log4j.appender.stdout.layout=org.apache.log4j.PatternLayout' \
			'log4j.appender.stdout.layout.ConversionPattern=%d | %-5p | %m%n' \
			>"$rootfs/opt/apache-activemq/conf/log4j.properties"
	fi
	local changes=()
	local c
	for c in "$@"; do changes+=(-c "$c"); done
	tar -C "$rootfs" -c . | "$docker" import "${changes[@]}" - "$tag" >/dev/null
	rm -rf "$rootfs"
	say "built image $tag"
}
rabbit_image=httpbus/rabbitmq-debian:12
activemq_image=httpbus/activemq-debian:12
debian_image "$rabbit_image" rabbitmq-server 'ENTRYPOINT ["/usr/sbin/rabbitmq-server"]'
debian_image "$activemq_image" activemq \
	'ENV ACTIVEMQ_HOME=/usr/share/activemq' 'ENV ACTIVEMQ_BASE=/opt/apache-activemq' \
	'ENV ACTIVEMQ_CONF=/opt/apache-activemq/conf' 'ENV ACTIVEMQ_DATA=/opt/apache-activemq/data' \
	'ENTRYPOINT ["/usr/bin/activemq", "console"]'

say "go test -run TestContainerBrokers ./internal/brokertest/ (every broker through testcontainers-go)"
set +e
HTTPBUS_TEST_CONTAINERS=1 \
	HTTPBUS_TEST_NATS_IMAGE="$image" \
	HTTPBUS_TEST_RABBITMQ_IMAGE="$rabbit_image" \
	HTTPBUS_TEST_ACTIVEMQ_IMAGE="$activemq_image" \
	TESTCONTAINERS_RYUK_DISABLED=true \
	DOCKER_HOST="$DOCKER_HOST" \
	go test -count=1 -timeout 10m -run 'TestContainerBrokers' -v ./internal/brokertest/ >"$work/brokers.log" 2>&1
rc=$?
set -e
grep -E -- '--- (PASS|FAIL|SKIP)|brokertest: |^ok|^FAIL' "$work/brokers.log"
if [ "$rc" != 0 ]; then
	tail -40 "$work/brokers.log" >&2
	echo "ERROR: broker containers through testcontainers-go failed" >&2
	exit 1
fi
networks=$("$docker" network ls --format '{{.Name}}' | tr '\n' ' ')
echo "testcontainers proof (--all): NATS, RabbitMQ AMQP and STOMP, ActiveMQ STOMP started through testcontainers-go and answered on 127.0.0.1; networks: $networks; containers left: $("$docker" ps -aq | wc -l)"
