package logfmt

import (
	"io"
	"log/slog"
	"math"
	"testing"
	"time"
)

// TestFastPath checks which records the handler writes itself: a test that
// only compared lines with slog's would pass with every record left to slog.
func TestFastPath(t *testing.T) {
	plain := []slog.Attr{slog.String("s", "x y"), slog.Int64("i", -1), slog.Uint64("u", 1), slog.Float64("f", 0.5),
		slog.Bool("b", true), slog.Duration("d", time.Second)}
	others := map[string]slog.Attr{
		"group": slog.Group("g", slog.Int("a", 1)), "any": slog.Any("a", struct{}{}), "time": slog.Time("t", time.Now()),
		"NaN": slog.Float64("f", math.NaN()), "empty key": slog.String("", "x"),
	}
	for _, json := range []bool{false, true} {
		h := New(io.Discard, json, nil)
		r := slog.NewRecord(time.Now(), slog.LevelInfo, "rpc", 0)
		r.AddAttrs(plain...)
		if _, ok := h.append(nil, r); !ok {
			t.Errorf("json %v: a record of plain attributes was left to slog", json)
		}
		for name, a := range others {
			r := r.Clone()
			r.AddAttrs(a)
			if _, ok := h.append(nil, r); ok {
				t.Errorf("json %v: a record with %s was not left to slog", json, name)
			}
		}
		if _, ok := h.append(nil, slog.NewRecord(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), slog.LevelInfo, "", 0)); ok != !json {
			t.Errorf("json %v: a record of the year 10000 taken: %v", json, ok)
		}
	}
}
