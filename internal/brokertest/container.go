package brokertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/httpbus/httpbus/internal/natsserver"
)

// Container images, each overridable by its environment variable (an image
// in a private registry, or one built locally: scripts/testcontainers.sh
// builds a FROM scratch nats-server image and sets EnvNATSImage to it).
const (
	EnvNATSImage     = "HTTPBUS_TEST_NATS_IMAGE"
	EnvRabbitMQImage = "HTTPBUS_TEST_RABBITMQ_IMAGE"
	EnvActiveMQImage = "HTTPBUS_TEST_ACTIVEMQ_IMAGE"

	DefaultNATSImage     = "nats:2.11.7"
	DefaultRabbitMQImage = "rabbitmq:3.13"
	DefaultActiveMQImage = "apache/activemq-classic:5.18.6"
)

// EnvNoContainers, when "1", skips the testcontainers step without asking
// Docker.
const EnvNoContainers = "HTTPBUS_TEST_NO_CONTAINERS"

// containerStartTimeout bounds pulling (if needed), creating and waiting for
// one container.
const containerStartTimeout = 3 * time.Minute

func image(env, def string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	return def
}

var (
	dockerOnce sync.Once
	dockerErr  error
)

// dockerHealth reports whether a Docker engine answers, once per process,
// the way testcontainers.SkipIfProviderIsNotHealthy checks it (provider
// lookup and health, a panic recovered) but returning the reason instead of
// skipping the test, so that resolution falls through to the next step.
// It disables the Ryuk reaper (TESTCONTAINERS_RYUK_DISABLED=true) unless the
// environment says otherwise: its image cannot be pulled where no registry
// answers, and every container here is terminated by a test cleanup.
func dockerHealth() error {
	dockerOnce.Do(func() {
		if os.Getenv(EnvNoContainers) == "1" {
			dockerErr = errors.New(EnvNoContainers + "=1")
			return
		}
		if _, set := os.LookupEnv("TESTCONTAINERS_RYUK_DISABLED"); !set {
			os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
		}
		defer func() {
			if r := recover(); r != nil {
				dockerErr = fmt.Errorf("testcontainers panicked looking for Docker: %v", r)
			}
		}()
		p, err := testcontainers.ProviderDocker.GetProvider()
		if err != nil {
			dockerErr = err
			return
		}
		defer p.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		dockerErr = p.Health(ctx)
	})
	return dockerErr
}

// dockerAvailable logs why the container step is passed over.
func dockerAvailable(t testing.TB) bool {
	t.Helper()
	if err := dockerHealth(); err != nil {
		t.Logf("brokertest: no Docker engine for testcontainers-go (%v); trying the next step", firstLine(err.Error()))
		return false
	}
	return true
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Containers run on the host network, so they must listen on a port
// nobody else uses (the shared brokers hold the default ones).
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// hostNetwork runs the container in the host's network namespace: no
// bridge is created and no traffic leaves loopback, since every broker is
// told to listen on 127.0.0.1 only. Port mappings mean nothing there, so
// the modules' exposed ports are dropped.
func hostNetwork() testcontainers.CustomizeRequestOption {
	return func(req *testcontainers.GenericContainerRequest) error {
		req.ExposedPorts = nil
		return testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.NetworkMode = "host"
			hc.PortBindings = nil
		})(req)
	}
}

// runOnHost creates and starts a container as testcontainers.Run does, on
// the host network, with a provider whose default network is "host".
//
// Why not testcontainers.Run (and the nats and rabbitmq modules, which call
// it): its provider makes "bridge" the default network and, where the
// daemon has none (dockerd --bridge=none, as scripts/testcontainers.sh runs
// it), creates a bridge network "reaper_default" and attaches the container
// to it. Containers here must never use or create a bridge: with "host" as
// the default network nothing is created or attached. The customizers
// (command, files, environment, wait strategy, logger) are
// testcontainers-go's own.
func runOnHost(ctx context.Context, t testing.TB, img string, opts ...testcontainers.ContainerCustomizer) (testcontainers.Container, error) {
	req := testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{Image: img},
		Started:          true,
	}
	logger := tclog.TestLogger(t)
	opts = append(opts, testcontainers.WithLogger(logger), hostNetwork())
	for _, o := range opts {
		if err := o.Customize(&req); err != nil {
			return nil, fmt.Errorf("customize: %w", err)
		}
	}
	p, err := testcontainers.NewDockerProvider(testcontainers.WithDefaultBridgeNetwork("host"), testcontainers.WithLogger(logger))
	if err != nil {
		return nil, err
	}
	defer p.Close()
	ctr, err := p.CreateContainer(ctx, req.ContainerRequest)
	if err != nil {
		return ctr, fmt.Errorf("create container: %w", err)
	}
	if err := ctr.Start(ctx); err != nil {
		return ctr, fmt.Errorf("start container: %w", err)
	}
	return ctr, nil
}

// started registers the container's termination and reports a failure to
// start it (logged, so that resolution falls through).
func started(t testing.TB, what string, ctr testcontainers.Container, err error) bool {
	t.Helper()
	if ctr != nil {
		testcontainers.CleanupContainer(t, ctr)
	}
	if err != nil {
		t.Logf("brokertest: testcontainers-go could not start %s: %v; trying the next step", what, err)
		return false
	}
	return true
}

// containerNATS starts nats-server (official image, or EnvNATSImage: any
// image whose entrypoint is nats-server) on the host network, listening on
// 127.0.0.1 at a free port.
func containerNATS(t testing.TB) string {
	t.Helper()
	if !dockerAvailable(t) {
		return ""
	}
	port, err := freePort()
	if err != nil {
		t.Logf("brokertest: %v", err)
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), containerStartTimeout)
	defer cancel()
	img := image(EnvNATSImage, DefaultNATSImage)
	ctr, err := runOnHost(ctx, t, img,
		testcontainers.WithCmd("-a", "127.0.0.1", "-p", strconv.Itoa(port)),
		testcontainers.WithWaitStrategyAndDeadline(time.Minute, wait.ForLog("Server is ready")),
	)
	if !started(t, "NATS ("+img+")", ctr, err) {
		return ""
	}
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	t.Logf("brokertest: NATS from testcontainers-go, image %s, at %s", img, url)
	return url
}

// rabbitMQ starts RabbitMQ with the STOMP plugin on the host network,
// AMQP and STOMP on free 127.0.0.1 ports. Erlang distribution and epmd use
// their own free loopback ports and node name, so they do not collide with
// a RabbitMQ already running on the host.
func rabbitMQ(t testing.TB) (amqpPort, stompPort int, ok bool) {
	t.Helper()
	if !dockerAvailable(t) {
		return 0, 0, false
	}
	var ports [4]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			t.Logf("brokertest: %v", err)
			return 0, 0, false
		}
		ports[i] = p
	}
	amqpPort, stompPort = ports[0], ports[1]
	distPort, epmdPort := ports[2], ports[3]
	conf := fmt.Sprintf(`loopback_users = none
default_user = guest
default_pass = guest
log.console = true
log.console.level = info
listeners.tcp.1 = 127.0.0.1:%d
stomp.listeners.tcp.1 = 127.0.0.1:%d
`, amqpPort, stompPort)
	ctx, cancel := context.WithTimeout(context.Background(), containerStartTimeout)
	defer cancel()
	img := image(EnvRabbitMQImage, DefaultRabbitMQImage)
	ctr, err := runOnHost(ctx, t, img,
		testcontainers.WithFiles(
			testcontainers.ContainerFile{Reader: strings.NewReader(conf), ContainerFilePath: "/etc/rabbitmq/httpbus.d/httpbus.conf", FileMode: 0o644},
			testcontainers.ContainerFile{Reader: strings.NewReader("[rabbitmq_stomp].\n"), ContainerFilePath: "/etc/rabbitmq/enabled_plugins", FileMode: 0o644},
		),
		testcontainers.WithEnv(map[string]string{
			// Only our configuration: the image's conf.d adds a listener on
			// 0.0.0.0:5672, which the host's RabbitMQ holds.
			"RABBITMQ_CONFIG_FILE":                "/etc/rabbitmq/httpbus.d/httpbus.conf",
			"RABBITMQ_CONFIG_FILES":               "/etc/rabbitmq/httpbus.d",
			"RABBITMQ_NODENAME":                   "httpbus" + strconv.Itoa(amqpPort) + "@localhost",
			"RABBITMQ_DIST_PORT":                  strconv.Itoa(distPort),
			"ERL_EPMD_ADDRESS":                    "127.0.0.1",
			"ERL_EPMD_PORT":                       strconv.Itoa(epmdPort),
			"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
		}),
		testcontainers.WithWaitStrategyAndDeadline(2*time.Minute, wait.ForLog("Server startup complete").WithStartupTimeout(2*time.Minute)),
	)
	if !started(t, "RabbitMQ ("+img+")", ctr, err) {
		return 0, 0, false
	}
	t.Logf("brokertest: RabbitMQ from testcontainers-go, image %s, AMQP at 127.0.0.1:%d, STOMP at 127.0.0.1:%d", img, amqpPort, stompPort)
	return amqpPort, stompPort, true
}

func containerAMQP(t testing.TB) string {
	t.Helper()
	amqpPort, _, ok := rabbitMQ(t)
	if !ok {
		return ""
	}
	return "amqp://guest:guest@127.0.0.1:" + strconv.Itoa(amqpPort) + "/"
}

func containerRabbitMQSTOMP(t testing.TB) string {
	t.Helper()
	_, stompPort, ok := rabbitMQ(t)
	if !ok {
		return ""
	}
	return "127.0.0.1:" + strconv.Itoa(stompPort)
}

// activeMQXML is a whole broker configuration: one STOMP connector on
// loopback with the 10 MiB frame limit the shared broker uses, no
// OpenWire, no web console, no persistence.
const activeMQXML = `<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="httpbus" persistent="false" useJmx="false" schedulerSupport="false">
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:%d?transport.maxFrameSize=10485760"/>
    </transportConnectors>
  </broker>
</beans>
`

// containerActiveMQ starts ActiveMQ Classic (a generic container: there is
// no testcontainers-go module for it) with its configuration replaced by
// activeMQXML.
func containerActiveMQ(t testing.TB) string {
	t.Helper()
	if !dockerAvailable(t) {
		return ""
	}
	port, err := freePort()
	if err != nil {
		t.Logf("brokertest: %v", err)
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), containerStartTimeout)
	defer cancel()
	img := image(EnvActiveMQImage, DefaultActiveMQImage)
	ctr, err := runOnHost(ctx, t, img,
		testcontainers.WithFiles(testcontainers.ContainerFile{
			Reader:            strings.NewReader(fmt.Sprintf(activeMQXML, port)),
			ContainerFilePath: "/opt/apache-activemq/conf/activemq.xml",
			FileMode:          0o644,
		}),
		testcontainers.WithEnv(map[string]string{"ACTIVEMQ_OPTS_MEMORY": "-Xms64M -Xmx256M"}),
		testcontainers.WithWaitStrategyAndDeadline(2*time.Minute, wait.ForLog("Connector stomp started").WithStartupTimeout(2*time.Minute)),
	)
	if !started(t, "ActiveMQ ("+img+")", ctr, err) {
		return ""
	}
	t.Logf("brokertest: ActiveMQ from testcontainers-go, image %s, STOMP at 127.0.0.1:%d", img, port)
	return "127.0.0.1:" + strconv.Itoa(port)
}

// embeddedNATS starts nats-server in the test process on a free loopback
// port, stopped at cleanup.
func embeddedNATS(t testing.TB) string {
	t.Helper()
	url, stop, err := natsserver.Start(natsserver.Config{})
	if err != nil {
		t.Logf("brokertest: embedded nats-server: %v", err)
		return ""
	}
	t.Cleanup(stop)
	t.Logf("brokertest: NATS embedded at %s", url)
	return url
}
