// Command envplane-load measures envplane's throughput and latency on this
// machine: it starts a server in process on a loopback port (or targets
// --url, which must be a loopback address) and drives it with concurrent
// clients for a bounded time.
//
// The data plane is measured over REST, Connect and gRPC: records are
// created, read and listed in one or many environments (--environments),
// picked round-robin. The control-plane scenarios (CreateEnvironment,
// GetEnvironment, ResolveHostname over Connect) follow unless --control=false.
// Every scenario is bounded by --duration and by an operation count.
// `make bench` runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"go.uber.org/fx"

	"github.com/envplane/envplane/app"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/config"
	"github.com/envplane/envplane/internal/server"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "envplane-load:", err)
		os.Exit(1)
	}
}

// Protocols the data plane is measured over.
const (
	protoREST        = "rest"         // net/http + JSON on the google.api.http routes
	protoConnect     = "connect"      // Connect, binary protobuf, HTTP/1.1
	protoConnectJSON = "connect-json" // Connect, JSON (what a browser's fetch sends), HTTP/1.1
	protoConnectH2C  = "connect-h2c"  // Connect, binary protobuf, HTTP/2 without TLS
	protoGRPC        = "grpc"         // gRPC over HTTP/2 without TLS
)

var (
	knownProtocols = []string{protoREST, protoConnect, protoConnectJSON, protoConnectH2C, protoGRPC}
	knownScenarios = []string{scenarioCreate, scenarioGet, scenarioList}
)

// options are the command's flags.
type options struct {
	url              string
	token            string
	duration         time.Duration
	concurrency      int
	maxOps           int
	maxCreates       int
	environments     int
	compareOne       bool // each scenario on the first environment alone, right before the run over all
	setupConcurrency int
	seed             int
	pageSize         int
	decodeEvery      int
	serveBaseline    string // address to serve the baseline handler on, instead of measuring
	baselineURL      string // measure the baseline handler there, instead of envplane
	protocols        []string
	scenarios        []string
	control          bool
	cpuprofile       string
	keep             bool
	driver           string   // of the data-plane environments
	tursodb          string   // path of tursodb (--driver turso)
	swapHostnames    bool     // the --swap-hostnames scenario instead of the others
	urls             []string // --url split at commas (--swap-hostnames only)
}

// loadGCPercent is the GOGC the tool runs at unless GOGC is set: envplane
// serve's default (--gc-percent).
const loadGCPercent = 400

// Drivers the data-plane environments can use.
var knownDrivers = []string{"sqlite", "turso", "memory"}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("envplane-load", flag.ContinueOnError)
	fs.StringVar(&o.url, "url", "", "base URL of a running server on loopback (default: start one in process); "+
		"with --swap-hostnames a comma-separated list, e.g. replicas on one PostgreSQL control plane")
	// The token's default is read after parsing, so -h never prints it.
	fs.StringVar(&o.token, "token", "", "bearer token for --url (default $ENVPLANE_TOKEN; in process the minted admin token is used)")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "how long each scenario runs at most")
	fs.IntVar(&o.concurrency, "concurrency", 16, "concurrent clients per scenario")
	fs.IntVar(&o.maxOps, "max-ops", 200000, "upper bound on the calls of each scenario (CreateEnvironment: --max-creates)")
	fs.IntVar(&o.maxCreates, "max-creates", 2000, "upper bound on environments created by the control-plane CreateEnvironment scenario")
	fs.IntVar(&o.environments, "environments", 1, "environments the data-plane scenarios spread over, round-robin (at most 50 with --driver turso)")
	fs.BoolVar(&o.compareOne, "compare-one", false, fmt.Sprintf("run each data-plane scenario on the first environment alone and over all --environments, "+
		"alternating in %d slices of --duration each, and print the throughput the spread costs: one server and one machine state for both figures, "+
		"as machines of this kind drift by tens of percent within minutes", compareSlices))
	fs.StringVar(&o.driver, "driver", "sqlite", "driver of the data-plane environments: "+strings.Join(knownDrivers, ", ")+
		"; turso starts one local tursodb per environment and brings it as the environment's database (the control plane's CreateEnvironment stays sqlite)")
	fs.StringVar(&o.tursodb, "tursodb", "", "path of tursodb for --driver turso (default: node_modules/"+tursodbPackage+"/tursodb under the module root)")
	fs.IntVar(&o.setupConcurrency, "setup-concurrency", 0, "concurrent calls while creating and seeding environments (default --concurrency)")
	fs.IntVar(&o.seed, "seed", 100, "records seeded into each environment before the scenarios (get and list read them)")
	fs.IntVar(&o.pageSize, "page-size", 20, "page_size of the list scenario")
	fs.IntVar(&o.decodeEvery, "decode-every", 16, "the REST client decodes one answer in this many (1: every answer); "+
		"the others are checked for status and content type and read to the end, as wrk or hey do")
	fs.StringVar(&o.serveBaseline, "serve-baseline", "", "serve the baseline, a bare net/http + encoding/json handler of GET /records/{id}, on this loopback address until interrupted")
	fs.StringVar(&o.baselineURL, "baseline-url", "", "measure only the baseline served at this loopback URL (by --serve-baseline in another process), with the REST client")
	protocols := fs.String("protocols", "rest,connect-json,connect,grpc", "data-plane protocols, comma-separated: "+strings.Join(knownProtocols, ", "))
	scenarios := fs.String("scenarios", "create,get,list", "data-plane scenarios, comma-separated (empty: none): "+strings.Join(knownScenarios, ", "))
	fs.BoolVar(&o.control, "control", true, "also run the control-plane scenarios (CreateEnvironment, GetEnvironment, ResolveHostname)")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the scenarios (setup excluded) to this file; in-process server only. "+
		"Server and client samples carry the label side=server or side=client: go tool pprof -tagfocus=side=server -top FILE")
	fs.BoolVar(&o.swapHostnames, "swap-hostnames", false, "run only the hostname-swap check: two environments of --driver (postgres allowed) each with one record, "+
		"--concurrency Connect readers listing by Host spread over every --url, one writer swapping the two hostnames through the first --url "+
		"for --duration; every answer must hold the records of the environment in X-Environment-Id (exit status 1 on a violation)")
	fs.BoolVar(&o.keep, "keep", false, "with --url, leave the environments the run created instead of deleting them at the end")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	var err error
	if o.protocols, err = splitKnown("--protocols", *protocols, knownProtocols); err != nil {
		return o, err
	}
	if o.scenarios, err = splitKnown("--scenarios", *scenarios, knownScenarios); err != nil {
		return o, err
	}
	switch {
	case o.duration <= 0:
		return o, errors.New("--duration: want a positive duration")
	case o.concurrency <= 0 || o.concurrency > 1024:
		return o, errors.New("--concurrency: want 1 to 1024")
	case o.maxOps <= 0 || o.maxCreates <= 0:
		return o, errors.New("--max-ops, --max-creates: want positive bounds")
	case o.environments <= 0 || o.environments > 10000:
		return o, errors.New("--environments: want 1 to 10000")
	case o.seed < 1 || o.seed > 100000:
		return o, errors.New("--seed: want 1 to 100000 records per environment")
	case o.pageSize <= 0 || o.pageSize > 1000:
		return o, errors.New("--page-size: want 1 to 1000")
	case o.decodeEvery < 1:
		return o, errors.New("--decode-every: want 1 or more")
	case o.setupConcurrency < 0:
		return o, errors.New("--setup-concurrency: want a positive number")
	case o.swapHostnames && o.cpuprofile != "":
		return o, errors.New("--cpuprofile cannot be used with --swap-hostnames")
	case o.swapHostnames && o.driver == "turso":
		return o, errors.New("--swap-hostnames: --driver turso is not supported (use sqlite, memory or postgres)")
	case !slices.Contains(knownDrivers, o.driver) && (!o.swapHostnames || o.driver != "postgres"):
		return o, fmt.Errorf("--driver: unknown %q (have %s)", o.driver, strings.Join(knownDrivers, ", "))
	case o.driver == "turso" && o.environments > maxTursoEnvironments:
		return o, fmt.Errorf("--environments: at most %d with --driver turso (one tursodb process each)", maxTursoEnvironments)
	case o.driver == "turso" && o.keep:
		return o, errors.New("--keep cannot be used with --driver turso: the tursodb processes holding the environments' data stop at exit")
	}
	if o.setupConcurrency == 0 {
		o.setupConcurrency = o.concurrency
	}
	if o.token == "" {
		o.token = os.Getenv("ENVPLANE_TOKEN")
	}
	if o.serveBaseline != "" {
		if err := requireLoopback("--serve-baseline", "http://"+o.serveBaseline); err != nil {
			return o, err
		}
	}
	if o.baselineURL != "" {
		o.baselineURL = strings.TrimRight(o.baselineURL, "/")
		if err := requireLoopback("--baseline-url", o.baselineURL); err != nil {
			return o, err
		}
	}
	if o.url != "" {
		for _, u := range strings.Split(o.url, ",") {
			if u = strings.TrimRight(strings.TrimSpace(u), "/"); u != "" {
				o.urls = append(o.urls, u)
			}
		}
		switch {
		case len(o.urls) == 0:
			return o, errors.New("--url: no URL given")
		case len(o.urls) > 1 && !o.swapHostnames:
			return o, errors.New("--url: several URLs only with --swap-hostnames")
		case len(o.urls) > 16:
			return o, errors.New("--url: at most 16 URLs")
		}
		for _, u := range o.urls {
			if err := requireLoopback("--url", u); err != nil {
				return o, err
			}
		}
		if o.token == "" {
			return o, errors.New("--url needs a bearer token: pass --token or set ENVPLANE_TOKEN")
		}
		if o.cpuprofile != "" {
			return o, errors.New("--cpuprofile profiles the in-process server; it cannot be used with --url")
		}
	}
	return o, nil
}

func splitKnown(name, list string, known []string) ([]string, error) {
	var out []string
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !slices.Contains(known, s) {
			return nil, fmt.Errorf("%s: unknown %q (have %s)", name, s, strings.Join(known, ", "))
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// compareSlices is how many alternating slices --compare-one cuts each of
// its two runs into.
const compareSlices = 5

func run() error {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	// An interrupt ends the running scenario early, skips the rest and
	// still cleans up.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if os.Getenv("GOGC") == "" {
		// envplane serve's default: the load generator, like the server,
		// spends its CPU on calls rather than on collecting garbage (it
		// shares the machine, and in process the runtime, with the server).
		debug.SetGCPercent(loadGCPercent)
	}
	switch {
	case o.serveBaseline != "":
		return serveBaseline(ctx, o.serveBaseline)
	case o.baselineURL != "":
		return runBaseline(ctx, o)
	}

	// The tursodb processes start before an in-process server, so they stop
	// after it (deferred calls run last first).
	var turso *tursodbFleet
	if o.driver == "turso" && !o.swapHostnames && len(o.scenarios) > 0 && len(o.protocols) > 0 {
		bin, err := findTursodb(o.tursodb)
		if err != nil {
			return err
		}
		if turso, err = startTursodbFleet(ctx, bin, o.environments); err != nil {
			return err
		}
		defer turso.close()
	}

	base, token := o.url, o.token
	mode := "server at " + base
	if o.url != "" {
		base = o.urls[0]
		if len(o.urls) > 1 {
			mode = "servers at " + strings.Join(o.urls, ", ")
		}
	} else {
		var shutdown func()
		if base, token, shutdown, err = startInProcess(ctx); err != nil {
			return err
		}
		defer shutdown()
		mode = "in-process server on " + base
	}
	// Everything this goroutine starts from here on (workers, transport
	// connections) is client work in a CPU profile.
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("side", "client")))

	cl := newClients(base, token, o.concurrency, o.decodeEvery)
	defer cl.close()
	fmt.Printf("envplane-load: %s; GOMAXPROCS %d; %d clients; at most %s and %d calls per scenario; REST decodes 1 answer in %d\n",
		mode, runtime.GOMAXPROCS(0), o.concurrency, o.duration, o.maxOps, o.decodeEvery)
	if la := loadAverage(); la != "" {
		// Clients and an in-process server share these CPUs with whatever
		// else runs: a high load means noisy figures.
		fmt.Printf("load average before the run: %s\n", la)
	}
	if o.swapHostnames {
		urls := o.urls
		if len(urls) == 0 {
			urls = []string{base}
		}
		return runSwap(ctx, cl, o, urls, token)
	}

	var dp *dataPlane
	if len(o.scenarios) > 0 && len(o.protocols) > 0 {
		if dp, err = setupDataPlane(ctx, cl, o, turso); err != nil {
			return err
		}
		if !o.keep && o.url != "" {
			defer dp.cleanup(cl, o.setupConcurrency)
		}
	}

	if o.cpuprofile != "" {
		stopProfile, err := startCPUProfile(o.cpuprofile)
		if err != nil {
			return err
		}
		defer stopProfile()
	}

	fmt.Println()
	printHeader()
	if dp != nil {
		for _, p := range o.protocols {
			for _, s := range o.scenarios {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if !o.compareOne || len(dp.envs) < 2 {
					printRow(p, s, fmt.Sprint(len(dp.envs)), dp.run(ctx, cl.data[p], s, o))
					continue
				}
				// In alternating slices of --duration, so that both runs see
				// the machine alike.
				slice := o
				slice.duration = o.duration / compareSlices
				var one, all result
				for range compareSlices {
					one = merge(one, dp.first().run(ctx, cl.data[p], s, slice))
					all = merge(all, dp.run(ctx, cl.data[p], s, slice))
				}
				printRow(p, s, "1", one)
				printRow(p, s, fmt.Sprint(len(dp.envs)), all)
				fmt.Printf("%12s %d environments cost %s of one's throughput\n", "", len(dp.envs), cost(one, all))
			}
		}
	}
	if o.control {
		cp, err := runControlPlane(ctx, cl, o)
		if cp != nil && !o.keep && o.url != "" {
			defer cp.cleanup(cl, o.setupConcurrency)
		}
		if err != nil {
			return err
		}
	}
	return ctx.Err()
}

// startInProcess starts the whole fx graph on a loopback port with its data
// in a temporary directory, and returns its URL, the admin token it minted
// and a function stopping it. Its goroutines carry the profiler label
// side=server.
func startInProcess(ctx context.Context) (base, token string, shutdown func(), err error) {
	dir, err := os.MkdirTemp("", "envplane-load-")
	if err != nil {
		return "", "", nil, err
	}
	cleanup := func() { _ = os.RemoveAll(dir) }
	cfg, err := config.Parse([]string{"--listen=127.0.0.1:0", "--data-dir=" + dir}, func(string) string { return "" }, io.Discard)
	if err != nil {
		cleanup()
		return "", "", nil, err
	}
	var srv *server.Server
	var fxApp *fx.App
	pprof.Do(ctx, pprof.Labels("side", "server"), func(ctx context.Context) {
		// Goroutines fx constructors and start hooks spawn (the listener,
		// every connection) inherit the label.
		fxApp = fx.New(app.Options(cfg, slog.New(slog.DiscardHandler)), fx.NopLogger, fx.Populate(&srv))
		err = fxApp.Start(ctx)
	})
	if err != nil {
		cleanup()
		return "", "", nil, err
	}
	stop := func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = fxApp.Stop(stopCtx)
		cleanup()
	}
	raw, err := os.ReadFile(filepath.Join(dir, auth.AdminTokenFile))
	if err != nil {
		stop()
		return "", "", nil, fmt.Errorf("admin token: %w", err)
	}
	return "http://" + srv.Addr(), strings.TrimSpace(string(raw)), stop, nil
}

func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "envplane-load: --cpuprofile:", err)
			return
		}
		fmt.Printf("\nCPU profile in %s; the server's share: go tool pprof -tagfocus=side=server -top %s\n", path, path)
	}, nil
}

func requireLoopback(flag, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	if u.Scheme != "http" {
		return fmt.Errorf("%s: want an http:// URL (the tool speaks cleartext HTTP/1.1 and h2c), got %q", flag, u.Scheme)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%s: %s is not a loopback address; this tool only loads servers on this machine", flag, host)
}

// loadAverage is the 1, 5 and 15 minute load average on Linux, else "".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
