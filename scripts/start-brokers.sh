#!/usr/bin/env bash
# start-brokers.sh — start the real brokers httpbus tests and benchmarks use, on
# 127.0.0.1, from Debian 12 packages. Idempotent: a broker whose port answers is
# left alone (then the whole script is a fast no-op); a missing package is
# installed; a stopped broker is started and waited for with a timeout. On any
# failure it prints "ERROR: ..." and a log tail on stderr and exits 1.
#
# stdout carries only the KEY=VALUE lines tests read (internal/brokertest):
#
#   HTTPBUS_TEST_NATS_URL=nats://127.0.0.1:4222
#   HTTPBUS_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/
#   HTTPBUS_TEST_STOMP_RABBITMQ_ADDR=127.0.0.1:61613
#   HTTPBUS_TEST_STOMP_ACTIVEMQ_ADDR=127.0.0.1:61614
#   HTTPBUS_TEST_MQTT_URL=mqtt://127.0.0.1:1883
#
# Usage:  set -a; eval "$(scripts/start-brokers.sh)"; set +a
#         scripts/start-brokers.sh nats activemq     # only some brokers
#
# Brokers (all loopback):
#   nats      nats-server with JetStream, 4222                  (pkg nats-server)
#   rabbitmq  rabbitmq-server, AMQP 5672 + STOMP plugin 61613   (pkg rabbitmq-server)
#   activemq  ActiveMQ 5.17 instance "main", STOMP 61614 with
#             transport.maxFrameSize=10485760 (10 MiB)         (pkg activemq)
#   mosquitto Mosquitto 2.0 (MQTT 5), 1883, anonymous,
#             set_tcp_nodelay true                             (pkg mosquitto)
#
# Environment (defaults in brackets):
#   NATS_PORT [4222]  NATS_STORE_DIR [/var/lib/nats-server]  NATS_LOG [/var/log/nats-server.log]
#   RABBITMQ_AMQP_PORT [5672]  RABBITMQ_STOMP_PORT [61613]
#   ACTIVEMQ_STOMP_PORT [61614]  ACTIVEMQ_HEAP [unset: package default 512M]
#   MOSQUITTO_PORT [1883]  MOSQUITTO_CONF [/etc/mosquitto/httpbus.conf]
#   START_TIMEOUT seconds per broker [90]
#
# Stop (for a restart test; never while others use the brokers):
#   kill "$(cat /run/nats-server-4222.pid)"; rabbitmqctl stop; kill "$(cat /run/activemq/main.pid)"
#   kill "$(cat /run/mosquitto-1883.pid)"
#
# Needs root only to install or start something.
set -euo pipefail

HOST=127.0.0.1
NATS_PORT=${NATS_PORT:-4222}
NATS_STORE_DIR=${NATS_STORE_DIR:-/var/lib/nats-server}
NATS_LOG=${NATS_LOG:-/var/log/nats-server.log}
RABBITMQ_AMQP_PORT=${RABBITMQ_AMQP_PORT:-5672}
RABBITMQ_STOMP_PORT=${RABBITMQ_STOMP_PORT:-61613}
ACTIVEMQ_STOMP_PORT=${ACTIVEMQ_STOMP_PORT:-61614}
ACTIVEMQ_FRAME_BYTES=10485760
MOSQUITTO_PORT=${MOSQUITTO_PORT:-1883}
MOSQUITTO_CONF=${MOSQUITTO_CONF:-/etc/mosquitto/httpbus.conf}
TIMEOUT=${START_TIMEOUT:-90}
APT_LOG=${APT_LOG:-/tmp/httpbus-start-brokers-apt.log}
APT_UPDATED=0
WHAT=start-brokers

log() { printf '[%s] %s\n' "$WHAT" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$WHAT" "$*" >&2; exit 1; }

# tail_logs FILE...: show the end of whichever logs exist, on stderr.
tail_logs() {
  local f
  for f in "$@"; do
    if [ -r "$f" ]; then
      printf -- '--- last lines of %s ---\n' "$f" >&2
      tail -n 30 "$f" >&2 || true
    fi
  done
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_port PORT TIMEOUT: poll until 127.0.0.1:PORT accepts a connection.
wait_port() {
  local port=$1 timeout=$2 start
  start=$(date +%s)
  until port_open "$HOST" "$port"; do
    (( $(date +%s) - start < timeout )) || return 1
    sleep 0.2
  done
  log "127.0.0.1:$port answers after $(( $(date +%s) - start ))s"
}

need_root() { [ "$(id -u)" = 0 ] || die "must run as root to $1 (try: sudo $0)"; }

# apt_install PKG...: install Debian packages, running apt-get update once if needed.
apt_install() {
  need_root "install $*"
  export DEBIAN_FRONTEND=noninteractive
  log "installing $* (apt-get; log $APT_LOG)"
  if ! apt-get install -y -qq "$@" >>"$APT_LOG" 2>&1; then
    if [ "$APT_UPDATED" = 0 ]; then
      APT_UPDATED=1
      apt-get update -qq >>"$APT_LOG" 2>&1 || true
    fi
    apt-get install -y -qq "$@" >>"$APT_LOG" 2>&1 \
      || { tail_logs "$APT_LOG"; die "apt-get install $* failed (log: $APT_LOG)"; }
  fi
}

start_nats() {
  WHAT=nats
  if port_open "$HOST" "$NATS_PORT"; then
    log "already running on $HOST:$NATS_PORT"
  else
    [ -x /usr/sbin/nats-server ] || apt_install nats-server
    need_root "start nats-server"
    mkdir -p "$NATS_STORE_DIR"
    local args=(-a "$HOST" -p "$NATS_PORT" -js -sd "$NATS_STORE_DIR" -l "$NATS_LOG")
    log "starting /usr/sbin/nats-server ${args[*]}"
    start-stop-daemon --start --background --make-pidfile --pidfile "/run/nats-server-$NATS_PORT.pid" \
      --exec /usr/sbin/nats-server -- "${args[@]}" \
      || { tail_logs "$NATS_LOG"; die "start-stop-daemon could not start nats-server"; }
    wait_port "$NATS_PORT" "$TIMEOUT" \
      || { tail_logs "$NATS_LOG"; die "nats-server did not answer on $HOST:$NATS_PORT within ${TIMEOUT}s (log: $NATS_LOG)"; }
  fi
  echo "HTTPBUS_TEST_NATS_URL=nats://$HOST:$NATS_PORT"
}

start_rabbitmq() {
  WHAT=rabbitmq
  local logs=(/var/log/rabbitmq/*.log)
  if port_open "$HOST" "$RABBITMQ_AMQP_PORT" && port_open "$HOST" "$RABBITMQ_STOMP_PORT"; then
    log "already running (AMQP $HOST:$RABBITMQ_AMQP_PORT, STOMP $HOST:$RABBITMQ_STOMP_PORT)"
  else
    [ -x /usr/sbin/rabbitmq-server ] || apt_install rabbitmq-server
    if ! port_open "$HOST" "$RABBITMQ_AMQP_PORT" && timeout 20 rabbitmqctl -q -t 10 ping >/dev/null 2>&1; then
      # The Erlang node answers: it is booting, or its rabbit application
      # was stopped (rabbitmqctl stop_app). Give a boot 20 s, then start it.
      if ! wait_port "$RABBITMQ_AMQP_PORT" 20; then
        need_root "start the rabbit application"
        log "node running but AMQP closed: rabbitmqctl start_app"
        timeout 120 rabbitmqctl -q start_app || log "rabbitmqctl start_app returned $?"
      fi
    fi
    if ! port_open "$HOST" "$RABBITMQ_AMQP_PORT" && ! timeout 20 rabbitmqctl -q -t 10 ping >/dev/null 2>&1; then
      need_root "start rabbitmq-server"
      if [ ! -e /etc/rabbitmq/rabbitmq.conf ]; then
        cat >/etc/rabbitmq/rabbitmq.conf <<CONF
# written by httpbus scripts/start-brokers.sh: loopback only
listeners.tcp.default = 127.0.0.1:$RABBITMQ_AMQP_PORT
stomp.listeners.tcp.1 = 127.0.0.1:$RABBITMQ_STOMP_PORT
CONF
      fi
      log "enabling rabbitmq_stomp (offline)"
      rabbitmq-plugins -q enable --offline rabbitmq_stomp >/dev/null \
        || die "rabbitmq-plugins enable --offline rabbitmq_stomp failed"
      log "starting rabbitmq-server -detached"
      rabbitmq-server -detached || log "rabbitmq-server -detached returned $? (the node may already be starting)"
    fi
    logs=(/var/log/rabbitmq/*.log)
    wait_port "$RABBITMQ_AMQP_PORT" "$TIMEOUT" \
      || { tail_logs "${logs[@]}"; die "RabbitMQ AMQP did not answer on $HOST:$RABBITMQ_AMQP_PORT within ${TIMEOUT}s (logs: /var/log/rabbitmq/)"; }
    if ! port_open "$HOST" "$RABBITMQ_STOMP_PORT"; then
      need_root "enable rabbitmq_stomp"
      log "enabling rabbitmq_stomp (online)"
      rabbitmq-plugins -q enable rabbitmq_stomp >/dev/null \
        || { tail_logs "${logs[@]}"; die "rabbitmq-plugins enable rabbitmq_stomp failed"; }
      wait_port "$RABBITMQ_STOMP_PORT" 60 \
        || { tail_logs "${logs[@]}"; die "RabbitMQ STOMP did not answer on $HOST:$RABBITMQ_STOMP_PORT within 60s (is stomp.listeners set to another port in /etc/rabbitmq/rabbitmq.conf?)"; }
    fi
  fi
  echo "HTTPBUS_TEST_AMQP_URL=amqp://guest:guest@$HOST:$RABBITMQ_AMQP_PORT/"
  echo "HTTPBUS_TEST_STOMP_RABBITMQ_ADDR=$HOST:$RABBITMQ_STOMP_PORT"
}

start_activemq() {
  WHAT=activemq
  local instance=main
  local avail=/etc/activemq/instances-available/$instance
  local enabled=/etc/activemq/instances-enabled/$instance
  local xml=$avail/activemq.xml
  local pidfile=/run/activemq/$instance.pid
  local out=/var/log/activemq-$instance.out
  local data=/var/lib/activemq/$instance/data
  if port_open "$HOST" "$ACTIVEMQ_STOMP_PORT"; then
    log "already running (STOMP on $HOST:$ACTIVEMQ_STOMP_PORT)"
  else
    [ -f /usr/share/activemq/bin/activemq.jar ] || apt_install activemq
    need_root "configure and start activemq"
    [ -f "$xml" ] || die "ActiveMQ config $xml not found (package activemq installed?)"
    # The package has OpenWire only; add (or replace) a STOMP connector with
    # the frame limit httpbus's stomp backend assumes.
    local uri="stomp://$HOST:$ACTIVEMQ_STOMP_PORT?transport.maxFrameSize=$ACTIVEMQ_FRAME_BYTES"
    if grep -q 'transportConnector name="stomp"' "$xml"; then
      sed -i "s#<transportConnector name=\"stomp\" uri=\"[^\"]*\"/>#<transportConnector name=\"stomp\" uri=\"$uri\"/>#" "$xml"
    else
      sed -i "s#</transportConnectors>#    <transportConnector name=\"stomp\" uri=\"$uri\"/>\n        </transportConnectors>#" "$xml"
    fi
    grep -q "name=\"stomp\" uri=\"$uri\"" "$xml" || die "could not add the STOMP connector to $xml"
    [ -e "$enabled" ] || ln -s "$avail" "$enabled"
    if [ -n "${ACTIVEMQ_HEAP:-}" ]; then
      echo "ACTIVEMQ_OPTS=\"-Xms$ACTIVEMQ_HEAP -Xmx$ACTIVEMQ_HEAP -Dorg.apache.activemq.UseDedicatedTaskRunner=true\"" >"$avail/options"
    fi
    mkdir -p /run/activemq && chown activemq /run/activemq
    touch "$out" && chown activemq "$out"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      log "process $(cat "$pidfile") exists; waiting for its STOMP port"
    else
      rm -f "$pidfile"
      # What /etc/init.d/activemq start does (minus its fixed sleep), without
      # systemd or invoke-rc.d; in a subshell so the options files stay local.
      (
        export INSTANCE=$instance ACTIVEMQ_USER=activemq ACTIVEMQ_PIDFILE=$pidfile \
          ACTIVEMQ_HOME=/usr/share/activemq ACTIVEMQ_CONFIG_DIR=$enabled
        # shellcheck disable=SC1091
        . /usr/share/activemq/activemq-options
        # shellcheck disable=SC1091
        if [ -r "$enabled/options" ]; then . "$enabled/options"; fi
        ACTIVEMQ_OUT=$out
        export ACTIVEMQ_BASE ACTIVEMQ_OPTS JAVA_HOME ACTIVEMQ_OUT
        log "starting /usr/bin/activemq $ACTIVEMQ_ARGS as user activemq"
        # shellcheck disable=SC2086
        start-stop-daemon --start --quiet --pidfile "$pidfile" --chuid activemq --background \
          --name java --startas /usr/bin/activemq -- $ACTIVEMQ_ARGS
      ) || { tail_logs "$out"; die "start-stop-daemon could not start activemq"; }
    fi
    wait_port "$ACTIVEMQ_STOMP_PORT" "$TIMEOUT" \
      || { tail_logs "$out" "$data/activemq.log"; die "ActiveMQ STOMP did not answer on $HOST:$ACTIVEMQ_STOMP_PORT within ${TIMEOUT}s (logs: $out, $data/; try '/etc/init.d/activemq console $instance')"; }
  fi
  echo "HTTPBUS_TEST_STOMP_ACTIVEMQ_ADDR=$HOST:$ACTIVEMQ_STOMP_PORT"
}

start_mosquitto() {
  WHAT=mosquitto
  local logf=/var/log/mosquitto-httpbus.log
  if port_open "$HOST" "$MOSQUITTO_PORT"; then
    log "already running on $HOST:$MOSQUITTO_PORT"
  else
    [ -x /usr/sbin/mosquitto ] || apt_install mosquitto
    command -v mosquitto_pub >/dev/null || apt_install mosquitto-clients
    need_root "start mosquitto"
    if [ ! -e "$MOSQUITTO_CONF" ]; then
      mkdir -p "$(dirname "$MOSQUITTO_CONF")"
      # set_tcp_nodelay: without it Mosquitto's small packets wait for the
      # client's delayed ACK (the mqtt backend works around it with
      # TCP_QUICKACK, see mqtt.Config.NoQuickAck).
      cat >"$MOSQUITTO_CONF" <<CONF
# written by httpbus scripts/start-brokers.sh: loopback only, anonymous
listener $MOSQUITTO_PORT $HOST
allow_anonymous true
set_tcp_nodelay true
CONF
    fi
    log "starting /usr/sbin/mosquitto -c $MOSQUITTO_CONF"
    start-stop-daemon --start --background --make-pidfile --pidfile "/run/mosquitto-$MOSQUITTO_PORT.pid" \
      --exec /usr/sbin/mosquitto -- -c "$MOSQUITTO_CONF" >>"$logf" 2>&1 \
      || { tail_logs "$logf"; die "start-stop-daemon could not start mosquitto"; }
    wait_port "$MOSQUITTO_PORT" "$TIMEOUT" \
      || { tail_logs "$logf"; die "mosquitto did not answer on $HOST:$MOSQUITTO_PORT within ${TIMEOUT}s"; }
  fi
  command -v mosquitto_pub >/dev/null || apt_install mosquitto-clients
  echo "HTTPBUS_TEST_MQTT_URL=mqtt://$HOST:$MOSQUITTO_PORT"
}

brokers=("$@")
[ ${#brokers[@]} -gt 0 ] || brokers=(nats rabbitmq activemq mosquitto)
for b in "${brokers[@]}"; do
  case $b in
    nats) start_nats ;;
    rabbitmq) start_rabbitmq ;;
    activemq) start_activemq ;;
    mosquitto) start_mosquitto ;;
    *) die "unknown broker $b (want nats, rabbitmq, activemq or mosquitto)" ;;
  esac
done
