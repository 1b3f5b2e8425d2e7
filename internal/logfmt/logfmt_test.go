package logfmt_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/envplane/envplane/internal/logfmt"
)

// both writes r through logfmt's handler and slog's, configured alike, and
// returns the two outputs.
func both(t testing.TB, json bool, r slog.Record, with func(slog.Handler) slog.Handler) (got, want string) {
	t.Helper()
	var g, w bytes.Buffer
	opts := &slog.HandlerOptions{Level: slog.LevelDebug}
	var fast slog.Handler = logfmt.New(&g, json, slog.LevelDebug)
	var std slog.Handler = slog.NewTextHandler(&w, opts)
	if json {
		std = slog.NewJSONHandler(&w, opts)
	}
	if with != nil {
		fast, std = with(fast), with(std)
	}
	if err := fast.Handle(context.Background(), r.Clone()); err != nil {
		t.Fatalf("logfmt Handle: %v", err)
	}
	if err := std.Handle(context.Background(), r.Clone()); err != nil {
		t.Fatalf("slog Handle: %v", err)
	}
	return g.String(), w.String()
}

func formats(t *testing.T, f func(t *testing.T, json bool)) {
	for _, json := range []bool{false, true} {
		name := "text"
		if json {
			name = "json"
		}
		t.Run(name, func(t *testing.T) { f(t, json) })
	}
}

func TestLinesAsSlogWritesThem(t *testing.T) {
	at := time.Date(2026, 11, 27, 20, 50, 19, 494_999_999, time.UTC)
	rpc := slog.NewRecord(at, slog.LevelInfo, "rpc", 0)
	rpc.AddAttrs(slog.String("request_id", "c1013d06a22e0d93bde98520"),
		slog.String("procedure", "/envplane.data.v1.DataService/GetRecord"), slog.String("protocol", "rest"),
		slog.Float64("duration_ms", 0.894), slog.String("token_id", "01a21ec5-eec1-74ed-9e82-3dc3f61e7db9"),
		slog.String("code", "ok"))
	odd := slog.NewRecord(at.In(time.FixedZone("", -(3*3600+30*60))), slog.LevelWarn+1, "a message\twith \"quotes\"", 0)
	odd.AddAttrs(slog.String("", "x"), slog.String("empty", ""), slog.String("key with space", "v=1"),
		slog.String("ctl", "a\x00b\x1f\x7f"), slog.String("bad utf8", "a\xffb"), slog.String("separators", "a\u2028b\u2029"),
		slog.String("unicode", "héllo wörld ✓"), slog.String("nbsp", "a\u00a0b"), slog.String("backslash", `a\b`),
		slog.String("html", "<a href='x'>&</a>"), slog.Int64("neg", math.MinInt64), slog.Uint64("big", math.MaxUint64),
		slog.Bool("yes", true), slog.Bool("no", false), slog.Duration("took", 1500*time.Millisecond),
		slog.Duration("negative", -time.Nanosecond), slog.Float64("tiny", 1e-9), slog.Float64("huge", 1.5e300),
		slog.Float64("zero", 0), slog.Float64("negzero", math.Copysign(0, -1)), slog.Float64("third", 1.0/3),
		slog.Float64("million", 1e6), slog.Float64("e21", 1e21), slog.Float64("e20", 1e20))
	fallbacks := map[string]slog.Attr{
		"group":     slog.Group("g", slog.Int("a", 1), slog.String("b", "x y")),
		"any":       slog.Any("err", errors.New("boom")),
		"time":      slog.Time("at", at),
		"nan":       slog.Float64("nan", math.NaN()),
		"inf":       slog.Float64("inf", math.Inf(-1)),
		"empty key": slog.Int("", 0),
		"valuer":    slog.Any("v", valuer{}),
		"bytes":     slog.Any("raw", []byte("a\"b")),
	}
	formats(t, func(t *testing.T, json bool) {
		for name, r := range map[string]slog.Record{
			"rpc": rpc, "odd": odd,
			"no time":  slog.NewRecord(time.Time{}, slog.LevelError, "", 0),
			"year 1e4": slog.NewRecord(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), slog.LevelDebug-3, "future", 0),
		} {
			if got, want := both(t, json, r, nil); got != want {
				t.Errorf("%s:\n got %q\nwant %q", name, got, want)
			}
		}
		for name, a := range fallbacks {
			r := rpc.Clone()
			r.AddAttrs(a, slog.String("after", "it"))
			if got, want := both(t, json, r, nil); got != want {
				t.Errorf("with %s:\n got %q\nwant %q", name, got, want)
			}
		}
		withs := map[string]func(slog.Handler) slog.Handler{
			"WithAttrs": func(h slog.Handler) slog.Handler { return h.WithAttrs([]slog.Attr{slog.String("request_id", "r1")}) },
			"WithGroup": func(h slog.Handler) slog.Handler { return h.WithGroup("call") },
		}
		for name, with := range withs {
			if got, want := both(t, json, rpc, with); got != want {
				t.Errorf("%s:\n got %q\nwant %q", name, got, want)
			}
		}
	})
}

type valuer struct{}

func (valuer) LogValue() slog.Value { return slog.StringValue("resolved value") }

func TestLevels(t *testing.T) {
	var buf bytes.Buffer
	var level slog.LevelVar
	level.Set(slog.LevelWarn)
	h := logfmt.New(&buf, false, &level)
	if h.Enabled(context.Background(), slog.LevelInfo) || !h.Enabled(context.Background(), slog.LevelWarn) {
		t.Error("a WARN handler must take WARN and not INFO")
	}
	level.Set(slog.LevelDebug)
	if !h.Enabled(context.Background(), slog.LevelDebug) {
		t.Error("the handler does not follow its Leveler")
	}
	if logfmt.New(&buf, true, nil).Enabled(context.Background(), slog.LevelDebug) {
		t.Error("without a level, DEBUG is written")
	}
}

// TestRandomLines holds the two alike over random records of the kinds the
// fast path writes.
func TestRandomLines(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 27))
	alphabet := []string{"a", "Z", "0", " ", "=", "\"", "\\", "\n", "\t", "\x00", "\x1b", "\x7f", "é", "✓", "\u2028",
		"\u00a0", "\u200b", "\xff", "\xe2\x82", "😀", "<", "&", "'", "{", "}", ":", ",", "-", "_", "."}
	str := func() string {
		var b strings.Builder
		for range rng.IntN(12) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		return b.String()
	}
	for range 3000 {
		at := time.Unix(rng.Int64N(1<<35)-1<<34, rng.Int64N(1e9)).In(time.FixedZone("", (rng.IntN(48)-24)*1800))
		if rng.IntN(20) == 0 {
			at = time.Time{}
		}
		r := slog.NewRecord(at, slog.Level(rng.IntN(24)-12), str(), 0)
		for range rng.IntN(10) {
			key := str()
			if key == "" {
				key = "k"
			}
			var v slog.Value
			switch rng.IntN(6) {
			case 0:
				v = slog.StringValue(str())
			case 1:
				v = slog.Int64Value(rng.Int64() - 1<<62)
			case 2:
				v = slog.Uint64Value(rng.Uint64())
			case 3:
				v = slog.Float64Value(math.Float64frombits(rng.Uint64()))
			case 4:
				v = slog.BoolValue(rng.IntN(2) == 0)
			case 5:
				v = slog.DurationValue(time.Duration(rng.Int64() - 1<<62))
			}
			r.AddAttrs(slog.Attr{Key: key, Value: v})
		}
		for _, json := range []bool{false, true} {
			if got, want := both(t, json, r, nil); got != want {
				t.Fatalf("json %v:\n got %q\nwant %q", json, got, want)
			}
		}
	}
}

func FuzzLine(f *testing.F) {
	f.Add("rpc", "request_id", "c1013d06", int64(7), 0.894, int64(1500))
	f.Add("", "", "", int64(0), 0.0, int64(0))
	f.Add("a\u2028b", "k=v", "a\xffb\x00", int64(-1), 1e-7, int64(-5))
	f.Fuzz(func(t *testing.T, msg, key, s string, n int64, x float64, d int64) {
		r := slog.NewRecord(time.Unix(n%(1<<35), d%1e9), slog.Level(n%20), msg, 0)
		r.AddAttrs(slog.String(key, s), slog.Int64(s, n), slog.Float64(key+"x", x), slog.Duration(msg, time.Duration(d)))
		for _, json := range []bool{false, true} {
			if got, want := both(t, json, r, nil); got != want {
				t.Fatalf("json %v:\n got %q\nwant %q", json, got, want)
			}
		}
	})
}

func BenchmarkLine(b *testing.B) {
	r := slog.NewRecord(time.Now(), slog.LevelInfo, "rpc", 0)
	r.AddAttrs(slog.String("request_id", "c1013d06a22e0d93bde98520"),
		slog.String("procedure", "/envplane.data.v1.DataService/GetRecord"), slog.String("protocol", "rest"),
		slog.Float64("duration_ms", 0.894), slog.String("token_id", "01a21ec5-eec1-74ed-9e82-3dc3f61e7db9"),
		slog.String("environment_id", "01a21ec5-f4a2-7cea-8904-e7c835c12303"), slog.String("resolved_by", "request"),
		slog.String("code", "ok"))
	for _, json := range []bool{false, true} {
		name := map[bool]string{false: "text", true: "json"}[json]
		var std slog.Handler = slog.NewTextHandler(discard{}, nil)
		if json {
			std = slog.NewJSONHandler(discard{}, nil)
		}
		for _, h := range []struct {
			name string
			h    slog.Handler
		}{{"slog", std}, {"logfmt", logfmt.New(discard{}, json, nil)}} {
			b.Run(name+"/"+h.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					_ = h.h.Handle(context.Background(), r)
				}
			})
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestConcurrentLines: lines written at once through the handler and the
// handlers it derives reach a writer that is not safe for concurrent use
// one whole line at a time (the race detector watches the writer).
func TestConcurrentLines(t *testing.T) {
	var buf bytes.Buffer
	h := logfmt.New(&buf, true, nil)
	loggers := []*slog.Logger{slog.New(h), slog.New(h).With("request_id", "r1"), slog.New(h).WithGroup("g")}
	done := make(chan struct{})
	for _, log := range loggers {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 200 {
				log.Info("line", "i", i)
			}
		}()
	}
	for range loggers {
		<-done
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 600 {
		t.Fatalf("%d lines, want 600", len(lines))
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, `{"time":`) || !strings.HasSuffix(l, "}") {
			t.Fatalf("a line was cut or mixed: %q", l)
		}
	}
}
