package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/envplane/envplane/internal/tursotest"
)

// tursodbPackage is the npm package `make tools` installs tursodb from, into
// the module root's node_modules.
const tursodbPackage = tursotest.Package

// maxTursoEnvironments bounds --environments with --driver turso: each
// environment is a tursodb process of its own.
const maxTursoEnvironments = 50

// tursoSecret is the database_secret brought with each environment: tursodb
// checks no token.
const tursoSecret = "local"

// tursodbFleet is the local tursodb processes serving the environments'
// databases, one per environment, in a temporary directory of their own.
type tursodbFleet struct {
	dir     string
	urls    []string // http://127.0.0.1:<port>, one per environment
	servers []*tursotest.Server
}

// close kills every tursodb and removes their files.
func (f *tursodbFleet) close() {
	var wg sync.WaitGroup
	for _, s := range f.servers {
		if s != nil {
			wg.Go(s.Close)
		}
	}
	wg.Wait()
	_ = os.RemoveAll(f.dir)
}

// findTursodb returns bin when set, else the tursodb of the module root's
// node_modules.
func findTursodb(bin string) (string, error) {
	if bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("--tursodb: %w", err)
		}
		return bin, nil
	}
	bin, err := tursotest.Binary()
	if err != nil {
		return "", fmt.Errorf("--driver turso: %w; or pass --tursodb", err)
	}
	return bin, nil
}

// startTursodbFleet starts n tursodb --sync-server processes on free
// loopback ports, a few at a time, each serving a new database file. On
// error the ones started are stopped.
func startTursodbFleet(ctx context.Context, bin string, n int) (*tursodbFleet, error) {
	dir, err := os.MkdirTemp("", "envplane-load-turso-")
	if err != nil {
		return nil, err
	}
	f := &tursodbFleet{dir: dir, urls: make([]string, n), servers: make([]*tursotest.Server, n)}
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for k := range n {
		g.Go(func() error {
			s, err := tursotest.Start(gctx, bin, filepath.Join(dir, fmt.Sprintf("db-%02d", k)))
			if err != nil {
				return fmt.Errorf("tursodb %d: %w", k, err)
			}
			f.urls[k], f.servers[k] = s.URL, s // each k its own element
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		f.close()
		return nil, err
	}
	fmt.Printf("turso: %d local tursodb started in %s (%s)\n", n, time.Since(start).Round(time.Millisecond), bin)
	return f, nil
}
