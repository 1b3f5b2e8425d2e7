// Command envplane runs the envplane server: `envplane serve`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"time"

	"go.uber.org/fx"

	"github.com/envplane/envplane/app"
	"github.com/envplane/envplane/internal/config"
	"github.com/envplane/envplane/internal/logfmt"
)

const usage = `envplane gives every environment of an organization its own database.

Usage:
  envplane serve [flags]   run the server (envplane serve -h lists the flags)
  envplane token create    mint a token in the local control plane (-h for flags)
  envplane healthcheck     exit 0 when the server answers /healthz (for container health checks)
  envplane help            show this text
`

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		if err := serve(args[1:], getenv, stderr); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			fmt.Fprintln(stderr, "envplane:", err)
			return 1
		}
		return 0
	case "token":
		if err := tokenCommand(args[1:], getenv, stdout, stderr); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 2
			}
			fmt.Fprintln(stderr, "envplane:", err)
			return 1
		}
		return 0
	case "healthcheck":
		if err := healthcheck(args[1:], stderr); err != nil {
			fmt.Fprintln(stderr, "envplane:", err)
			return 1
		}
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "envplane: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

func serve(args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := config.Parse(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	if getenv("GOGC") == "" {
		// The heap of a busy server is mostly garbage of finished requests:
		// collecting it less often bought a quarter more reads per second
		// (make bench), for a heap a few times the live data.
		debug.SetGCPercent(cfg.GCPercent)
	}
	fxApp := fx.New(app.Options(cfg, log))
	startCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := fxApp.Start(startCtx); err != nil {
		return err
	}
	if cfg.DebugListen != "" {
		_, stop, err := serveProfiler(cfg.DebugListen, log)
		if err != nil {
			_ = fxApp.Stop(context.Background())
			return err
		}
		defer stop()
	}
	sig := <-fxApp.Wait()
	log.Info("shutting down", "signal", sig.Signal.String())
	stopCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout+5*time.Second)
	defer cancel()
	if err := fxApp.Stop(stopCtx); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// serveProfiler serves Go's profiler (net/http/pprof) on addr, a loopback
// address (config checks), until stop; bound is the address it listens on.
func serveProfiler(addr string, log *slog.Logger) (bound string, stop func(), err error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("--debug-listen: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("serving the profiler", "addr", ln.Addr().String(), "path", "/debug/pprof/")
	return ln.Addr().String(), func() { _ = srv.Close() }, nil
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	return slog.New(logfmt.New(w, cfg.LogFormat == "json", cfg.LogLevel))
}

// healthcheck asks a server's /healthz, for images without curl.
func healthcheck(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("envplane healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:8080/healthz", "health endpoint to ask")
	if err := fs.Parse(args); err != nil {
		return err
	}
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get(*url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", *url, resp.Status)
	}
	return nil
}
