package engine_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/envplane/envplane/internal/driver/drivermem"
	"github.com/envplane/envplane/internal/driver/driverpg"
	"github.com/envplane/envplane/internal/driver/driversqlite"
)

// BenchmarkColdOpen measures what a registry miss costs per engine: opening
// an environment's database and proving it answers.
func BenchmarkColdOpen(b *testing.B) {
	ctx := context.Background()
	b.Run("memory", func(b *testing.B) {
		for b.Loop() {
			d := drivermem.New()
			if err := d.Ping(ctx); err != nil {
				b.Fatal(err)
			}
			_ = d.Close()
		}
	})
	b.Run("sqlite", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "env.db")
		for b.Loop() {
			d, err := driversqlite.Open(ctx, path)
			if err != nil {
				b.Fatal(err)
			}
			if err := d.Ping(ctx); err != nil {
				b.Fatal(err)
			}
			_ = d.Close()
		}
	})
	b.Run("postgres", func(b *testing.B) {
		url := os.Getenv("ENVPLANE_TEST_POSTGRES_URL")
		if url == "" {
			b.Skip("set ENVPLANE_TEST_POSTGRES_URL to measure PostgreSQL")
		}
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			b.Fatal(err)
		}
		name := fmt.Sprintf("envplane_bench_%d", os.Getpid())
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			_, _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = conn.Close(context.Background())
		})
		cfg := conn.Config()
		target := fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name)
		for b.Loop() {
			d, err := driverpg.OpenURL(ctx, target)
			if err != nil {
				b.Fatal(err)
			}
			if err := d.Ping(ctx); err != nil {
				b.Fatal(err)
			}
			_ = d.Close()
		}
	})
}
