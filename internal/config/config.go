// Package config holds the server's settings, read from flags with
// ENVPLANE_* environment variables as defaults, so the same binary runs
// unchanged under a shell, systemd or a container.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/envplane/envplane/internal/hostname"
)

// Service names accepted by --services.
const (
	ServiceEnvironment = "environment"
	ServiceAccess      = "access"
	ServiceMetadata    = "metadata"
	ServiceData        = "data"
)

// Implemented lists the services this build can serve, in mount order.
var Implemented = []string{ServiceEnvironment, ServiceAccess, ServiceMetadata, ServiceData}

// Config is everything `envplane serve` is told.
type Config struct {
	Listen       string
	DataDir      string
	ControlPlane string // a SQLite file path or sqlite: URL (empty = <data-dir>/controlplane.db), or a postgres:// URL
	// PostgresAdminURL reaches a cluster where postgres environments are
	// provisioned (a role with CREATEDB and CREATEROLE); empty disables the driver.
	PostgresAdminURL string
	// MasterKeyFile holds the keys that encrypt credentials; MasterKey holds
	// them inline (ENVPLANE_MASTER_KEY). Embedded mode creates
	// <data-dir>/master.key when neither is set.
	MasterKeyFile string
	MasterKey     string
	// Turso* configure the Turso Platform API that provisions turso
	// environments; without an organization and a token the driver takes
	// only bring-your-own databases.
	TursoOrganization string
	TursoGroup        string
	TursoAPIToken     string
	TursoAPIURL       string
	// TursoScheme is the scheme of provisioned databases' URLs: libsql for
	// Turso itself; http for a local libSQL server standing in for it.
	TursoScheme string
	RootDomain  string
	// APIHostnames are the API's own hostnames (normalized): never an
	// environment's, and a Host naming one is no hint.
	APIHostnames []string
	// HostnameChecks configure the proofs of custom hostnames.
	HostnameChecks  HostnameChecks
	Services        []string
	CORSOrigins     []string
	MaxRequestBytes int64
	ShutdownTimeout time.Duration
	// MaxOpenEnvironments bounds the environments holding an open database
	// handle at once; IdleTTL closes handles unused for that long.
	MaxOpenEnvironments int
	IdleTTL             time.Duration
	// GCPercent is the garbage collector's target (GOGC) of envplane serve
	// when the GOGC variable is not set.
	GCPercent int
	// DebugListen, when set, serves Go's profiler (net/http/pprof) on that
	// loopback address, apart from the API and without authentication.
	DebugListen string
	LogLevel    slog.Level
	LogFormat   string // json or text
}

// HostnameChecks configures how ownership of custom hostnames is proven and
// re-proven.
type HostnameChecks struct {
	// DNSResolver is the host:port of the DNS server the checks ask ("" =
	// the system's resolver).
	DNSResolver string
	// HTTPPort is the port the HTTP challenge is fetched from (80).
	HTTPPort int
	// Interval is how often a verified custom hostname is checked again.
	Interval time.Duration
	// Grace is how long a verified hostname that stopped proving ownership
	// keeps routing.
	Grace time.Duration
	// AllowPrivate lets HTTP checks fetch from non-public addresses
	// (loopback, private networks): tests and closed networks only.
	AllowPrivate bool
}

// ControlPlaneIsPostgres reports whether the control plane is a PostgreSQL URL.
func (c Config) ControlPlaneIsPostgres() bool {
	return strings.HasPrefix(c.ControlPlane, "postgres://") || strings.HasPrefix(c.ControlPlane, "postgresql://")
}

// MasterKeyPath is the key file used when no key is configured (embedded mode).
func (c Config) MasterKeyPath() string {
	if c.MasterKeyFile != "" {
		return c.MasterKeyFile
	}
	return filepath.Join(c.DataDir, "master.key")
}

// ControlPlanePath returns the SQLite file of the embedded control plane.
func (c Config) ControlPlanePath() string {
	switch {
	case c.ControlPlane == "":
		return filepath.Join(c.DataDir, "controlplane.db")
	case strings.HasPrefix(c.ControlPlane, "sqlite://"):
		return strings.TrimPrefix(c.ControlPlane, "sqlite://")
	case strings.HasPrefix(c.ControlPlane, "sqlite:"):
		return strings.TrimPrefix(c.ControlPlane, "sqlite:")
	default:
		return c.ControlPlane
	}
}

// Has reports whether service is among those to serve.
func (c Config) Has(service string) bool { return slices.Contains(c.Services, service) }

// Parse reads the serve flags from args, with getenv supplying ENVPLANE_*
// defaults. Usage and errors go to out.
func Parse(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	env := func(name, def string) string {
		if v := getenv("ENVPLANE_" + name); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("envplane serve", flag.ContinueOnError)
	fs.SetOutput(out)
	var c Config
	var services, origins, level string
	fs.StringVar(&c.Listen, "listen", env("LISTEN", "127.0.0.1:8080"), "address to serve every protocol on (ENVPLANE_LISTEN)")
	fs.StringVar(&c.DataDir, "data-dir", env("DATA_DIR", "./.envplane"), "directory for the control plane, environment databases and keys (ENVPLANE_DATA_DIR)")
	fs.StringVar(&c.ControlPlane, "control-plane", env("CONTROL_PLANE", ""), "control-plane store: a SQLite file path (default <data-dir>/controlplane.db) or a postgres:// URL for several replicas (ENVPLANE_CONTROL_PLANE)")
	fs.StringVar(&c.PostgresAdminURL, "postgres-admin-url", env("POSTGRES_ADMIN_URL", ""), "postgres:// URL of a role allowed to create databases and roles; enables the postgres driver (ENVPLANE_POSTGRES_ADMIN_URL)")
	fs.StringVar(&c.MasterKeyFile, "master-key-file", env("MASTER_KEY_FILE", ""), "file with the keys that encrypt credentials (default <data-dir>/master.key, created in embedded mode) (ENVPLANE_MASTER_KEY_FILE)")
	c.MasterKey = getenv("ENVPLANE_MASTER_KEY")
	fs.StringVar(&c.TursoOrganization, "turso-organization", env("TURSO_ORGANIZATION", ""), "Turso organization slug that provisions turso environments (ENVPLANE_TURSO_ORGANIZATION)")
	fs.StringVar(&c.TursoGroup, "turso-group", env("TURSO_GROUP", "default"), "Turso group new databases go to (ENVPLANE_TURSO_GROUP)")
	tursoToken := getenv("TURSO_API_TOKEN")
	if v := getenv("ENVPLANE_TURSO_API_TOKEN"); v != "" {
		tursoToken = v
	}
	// The default stays out of the flag so -h never prints the token.
	fs.StringVar(&c.TursoAPIToken, "turso-api-token", "", "Turso Platform API token (default $TURSO_API_TOKEN; prefer the variable: flags show in ps)")
	fs.StringVar(&c.TursoAPIURL, "turso-api-url", env("TURSO_API_URL", "https://api.turso.tech"), "Turso Platform API base URL (ENVPLANE_TURSO_API_URL)")
	fs.StringVar(&c.TursoScheme, "turso-database-scheme", env("TURSO_DATABASE_SCHEME", "libsql"), "scheme of provisioned turso databases: libsql, https or http (ENVPLANE_TURSO_DATABASE_SCHEME)")
	fs.StringVar(&c.RootDomain, "root-domain", env("ROOT_DOMAIN", "localhost"), "domain under which environment hostnames are generated (ENVPLANE_ROOT_DOMAIN)")
	var apiHostnames string
	fs.StringVar(&apiHostnames, "api-hostnames", env("API_HOSTNAMES", ""), "comma-separated hostnames of the API itself: never an environment's, and a call on them names no environment (ENVPLANE_API_HOSTNAMES)")
	fs.StringVar(&c.HostnameChecks.DNSResolver, "dns-resolver", env("DNS_RESOLVER", ""), "host:port of the DNS server that custom hostnames' TXT challenges are looked up on (default: the system's resolver) (ENVPLANE_DNS_RESOLVER)")
	checkPort := env("HOSTNAME_CHECK_HTTP_PORT", "80")
	fs.StringVar(&checkPort, "hostname-check-http-port", checkPort, "port the HTTP challenge of a custom hostname is fetched from (ENVPLANE_HOSTNAME_CHECK_HTTP_PORT)")
	checkInterval := env("HOSTNAME_CHECK_INTERVAL", "1h")
	fs.StringVar(&checkInterval, "hostname-check-interval", checkInterval, "how often a verified custom hostname proves ownership again (ENVPLANE_HOSTNAME_CHECK_INTERVAL)")
	fs.BoolVar(&c.HostnameChecks.AllowPrivate, "hostname-check-allow-private", env("HOSTNAME_CHECK_ALLOW_PRIVATE", "") == "true", "let the HTTP challenge of a custom hostname be fetched from loopback and private addresses: for tests and closed networks, never on a server the internet reaches (ENVPLANE_HOSTNAME_CHECK_ALLOW_PRIVATE)")
	grace := env("HOSTNAME_GRACE", "24h")
	fs.StringVar(&grace, "hostname-grace", grace, "how long a verified custom hostname that stopped proving ownership keeps routing (ENVPLANE_HOSTNAME_GRACE)")
	fs.StringVar(&services, "services", env("SERVICES", strings.Join(Implemented, ",")), "comma-separated services to serve (ENVPLANE_SERVICES)")
	fs.StringVar(&origins, "cors-origins", env("CORS_ORIGINS", ""), "comma-separated browser origins allowed to call the API, or * (ENVPLANE_CORS_ORIGINS)")
	maxBytes := env("MAX_REQUEST_BYTES", "4194304")
	fs.StringVar(&maxBytes, "max-request-bytes", maxBytes, "largest request body accepted (ENVPLANE_MAX_REQUEST_BYTES)")
	shutdown := env("SHUTDOWN_TIMEOUT", "30s")
	fs.StringVar(&shutdown, "shutdown-timeout", shutdown, "how long in-flight calls may drain on shutdown (ENVPLANE_SHUTDOWN_TIMEOUT)")
	maxOpen := env("MAX_OPEN_ENVIRONMENTS", "1000")
	fs.StringVar(&maxOpen, "max-open-environments", maxOpen, "environments that may hold an open database handle at once (ENVPLANE_MAX_OPEN_ENVIRONMENTS)")
	idle := env("ENVIRONMENT_IDLE_TTL", "10m")
	fs.StringVar(&idle, "environment-idle-ttl", idle, "close an environment's database handle after this long unused (ENVPLANE_ENVIRONMENT_IDLE_TTL)")
	gcPercent := env("GC_PERCENT", "400")
	fs.StringVar(&gcPercent, "gc-percent", gcPercent, "garbage collector target, as GOGC (which wins when set): the heap may grow this many percent over the live data before a collection; cap memory with GOMEMLIMIT (ENVPLANE_GC_PERCENT)")
	fs.StringVar(&c.DebugListen, "debug-listen", env("DEBUG_LISTEN", ""), "loopback address to serve Go's profiler on, /debug/pprof/ (default: off) (ENVPLANE_DEBUG_LISTEN)")
	fs.StringVar(&level, "log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error (ENVPLANE_LOG_LEVEL)")
	fs.StringVar(&c.LogFormat, "log-format", env("LOG_FORMAT", "text"), "text or json (ENVPLANE_LOG_FORMAT)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if c.TursoAPIToken == "" {
		c.TursoAPIToken = tursoToken
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	var err error
	if c.MaxRequestBytes, err = strconv.ParseInt(maxBytes, 10, 64); err != nil || c.MaxRequestBytes <= 0 {
		return Config{}, fmt.Errorf("--max-request-bytes: want a positive number of bytes, got %q", maxBytes)
	}
	if c.ShutdownTimeout, err = time.ParseDuration(shutdown); err != nil {
		return Config{}, fmt.Errorf("--shutdown-timeout: %w", err)
	}
	if c.MaxOpenEnvironments, err = strconv.Atoi(maxOpen); err != nil || c.MaxOpenEnvironments <= 0 {
		return Config{}, fmt.Errorf("--max-open-environments: want a positive number, got %q", maxOpen)
	}
	if c.IdleTTL, err = time.ParseDuration(idle); err != nil || c.IdleTTL < 0 {
		return Config{}, fmt.Errorf("--environment-idle-ttl: want a duration such as 10m, got %q", idle)
	}
	if c.GCPercent, err = strconv.Atoi(gcPercent); err != nil || c.GCPercent <= 0 {
		return Config{}, fmt.Errorf("--gc-percent: want a positive number, got %q", gcPercent)
	}
	if c.DebugListen != "" {
		host, _, err := net.SplitHostPort(c.DebugListen)
		if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			return Config{}, fmt.Errorf("--debug-listen: want a loopback host:port such as 127.0.0.1:6060 (the profiler has no authentication), got %q", c.DebugListen)
		}
	}
	if err := c.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return Config{}, fmt.Errorf("--log-level: %w", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return Config{}, fmt.Errorf("--log-format: want text or json, got %q", c.LogFormat)
	}
	if c.RootDomain, err = hostname.Normalize(c.RootDomain); err != nil {
		return Config{}, fmt.Errorf("--root-domain: %w", err)
	}
	for _, h := range splitList(apiHostnames) {
		n, err := hostname.Normalize(h)
		if err != nil {
			return Config{}, fmt.Errorf("--api-hostnames: %w", err)
		}
		c.APIHostnames = append(c.APIHostnames, n)
	}
	if c.HostnameChecks.DNSResolver != "" {
		if _, _, err := net.SplitHostPort(c.HostnameChecks.DNSResolver); err != nil {
			return Config{}, fmt.Errorf("--dns-resolver: want host:port, got %q", c.HostnameChecks.DNSResolver)
		}
	}
	if c.HostnameChecks.HTTPPort, err = strconv.Atoi(checkPort); err != nil || c.HostnameChecks.HTTPPort <= 0 || c.HostnameChecks.HTTPPort > 65535 {
		return Config{}, fmt.Errorf("--hostname-check-http-port: want a port, got %q", checkPort)
	}
	if c.HostnameChecks.Interval, err = time.ParseDuration(checkInterval); err != nil || c.HostnameChecks.Interval <= 0 {
		return Config{}, fmt.Errorf("--hostname-check-interval: want a positive duration such as 1h, got %q", checkInterval)
	}
	if c.HostnameChecks.Grace, err = time.ParseDuration(grace); err != nil || c.HostnameChecks.Grace < 0 {
		return Config{}, fmt.Errorf("--hostname-grace: want a duration such as 24h, got %q", grace)
	}
	for _, s := range splitList(services) {
		if !slices.Contains(Implemented, s) {
			return Config{}, fmt.Errorf("--services: %q is not a service this build serves (have %s)", s, strings.Join(Implemented, ", "))
		}
		if !slices.Contains(c.Services, s) {
			c.Services = append(c.Services, s)
		}
	}
	if len(c.Services) == 0 {
		return Config{}, errors.New("--services: name at least one service")
	}
	c.CORSOrigins = splitList(origins)
	if c.ControlPlaneIsPostgres() && c.MasterKeyFile == "" && c.MasterKey == "" {
		return Config{}, errors.New("a PostgreSQL control plane needs the credential key shared by every replica: " +
			"set --master-key-file or ENVPLANE_MASTER_KEY (format id:base64-of-32-bytes)")
	}
	return c, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
