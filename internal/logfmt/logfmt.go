// Package logfmt is the server's log handler: the lines of log/slog's
// TextHandler or JSONHandler, byte for byte, written for a fraction of their
// cost when a record is flat (no groups, no handler attributes) and holds
// only strings, integers, floats, booleans and durations, as the one line
// every call writes does (slog's own handler cost 7% of a record read's
// throughput). Any other record is slog's handler's to write.
package logfmt

import (
	"context"
	"io"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Handler writes records as slog's TextHandler (or JSONHandler) configured
// with the same level would. Records it does not write itself, and the
// handlers of WithAttrs and WithGroup, are slog's.
type Handler struct {
	std   slog.Handler
	json  bool
	level slog.Leveler
	w     lockedWriter // shared with std: lines of both never interleave
}

// lockedWriter writes one line at a time to w, whichever handler writes it.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

var _ slog.Handler = (*Handler)(nil)

// New is a handler writing lines to w: JSON objects when json is true,
// key=value text otherwise; records below level are dropped (nil: INFO).
func New(w io.Writer, json bool, level slog.Leveler) *Handler {
	if level == nil {
		level = slog.LevelInfo
	}
	lw := lockedWriter{mu: new(sync.Mutex), w: w}
	opts := &slog.HandlerOptions{Level: level}
	var std slog.Handler = slog.NewTextHandler(lw, opts)
	if json {
		std = slog.NewJSONHandler(lw, opts)
	}
	return &Handler{std: std, json: json, level: level, w: lw}
}

// Enabled reports whether records at level are written.
func (h *Handler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= h.level.Level()
}

// WithAttrs is slog's handler with attrs: loggers made With attributes
// write lines that are not on the hot path.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler { return h.std.WithAttrs(attrs) }

// WithGroup is slog's handler with the group.
func (h *Handler) WithGroup(name string) slog.Handler { return h.std.WithGroup(name) }

// Handle writes r as one line.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	buf := lines.Get().(*[]byte)
	defer func() {
		if cap(*buf) <= maxPooledLine {
			lines.Put(buf)
		}
	}()
	line, ok := h.append((*buf)[:0], r)
	*buf = line
	if !ok {
		return h.std.Handle(ctx, r)
	}
	_, err := h.w.Write(line)
	return err
}

// lines are buffers for lines.
var lines = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxPooledLine bounds the buffers kept in lines.
const maxPooledLine = 16 << 10

// append appends r's line to b, or reports a record it leaves to slog's
// handler.
func (h *Handler) append(b []byte, r slog.Record) ([]byte, bool) {
	ok := true
	if h.json {
		b = append(b, '{')
	}
	sep := false
	if !r.Time.IsZero() {
		t := r.Time.Round(0) // no monotonic reading, as slog has it
		b = h.appendKey(b, slog.TimeKey, sep)
		if h.json {
			if y := t.Year(); y < 0 || y >= 10000 {
				return b, false
			}
			b = append(b, '"')
			b = t.AppendFormat(b, time.RFC3339Nano)
			b = append(b, '"')
		} else {
			b = appendRFC3339Millis(b, t)
		}
		sep = true
	}
	b = h.appendKey(b, slog.LevelKey, sep)
	b = h.appendString(b, r.Level.String())
	b = h.appendKey(b, slog.MessageKey, true)
	b = h.appendString(b, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b, ok = h.appendAttr(b, a)
		return ok
	})
	if h.json {
		b = append(b, '}')
	}
	return append(b, '\n'), ok
}

// appendAttr appends a, or reports an attribute of a kind only slog's
// handler writes. An attribute without a key is left to slog, which drops
// it when its value is empty too.
func (h *Handler) appendAttr(b []byte, a slog.Attr) ([]byte, bool) {
	if a.Key == "" {
		return b, false
	}
	v := a.Value
	switch v.Kind() {
	case slog.KindString:
		b = h.appendKey(b, a.Key, true)
		return h.appendString(b, v.String()), true
	case slog.KindInt64:
		b = h.appendKey(b, a.Key, true)
		return strconv.AppendInt(b, v.Int64(), 10), true
	case slog.KindUint64:
		b = h.appendKey(b, a.Key, true)
		return strconv.AppendUint(b, v.Uint64(), 10), true
	case slog.KindBool:
		b = h.appendKey(b, a.Key, true)
		return strconv.AppendBool(b, v.Bool()), true
	case slog.KindDuration:
		b = h.appendKey(b, a.Key, true)
		if h.json {
			return strconv.AppendInt(b, int64(v.Duration()), 10), true
		}
		return append(b, v.Duration().String()...), true
	case slog.KindFloat64:
		f := v.Float64()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return b, false // slog writes its encoder's error
		}
		b = h.appendKey(b, a.Key, true)
		if h.json {
			return appendJSONFloat(b, f), true
		}
		return strconv.AppendFloat(b, f, 'g', -1, 64), true
	}
	return b, false
}

// appendKey appends key and what follows it, after a separator unless the
// key is the line's first.
func (h *Handler) appendKey(b []byte, key string, sep bool) []byte {
	if h.json {
		if sep {
			b = append(b, ',')
		}
		return append(h.appendString(b, key), ':')
	}
	if sep {
		b = append(b, ' ')
	}
	return append(h.appendString(b, key), '=')
}

// appendString appends s as a JSON string, or as text: bare, or quoted
// when it would otherwise be ambiguous.
func (h *Handler) appendString(b []byte, s string) []byte {
	if h.json {
		b = append(b, '"')
		b = appendEscapedJSONString(b, s)
		return append(b, '"')
	}
	if needsQuoting(s) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}

// appendRFC3339Millis is slog's text time: RFC 3339 with exactly three
// digits of milliseconds, truncated.
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	const prefixLen = len("2006-01-02T15:04:05.000")
	n := len(b)
	// RFC3339Nano trims trailing zeros: a tenth of a millisecond more keeps
	// a fourth digit, which is then dropped.
	t = t.Truncate(time.Millisecond).Add(time.Millisecond / 10)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b[:n+prefixLen], b[n+prefixLen+1:]...)
}

// safe is whether an ASCII byte stands for itself in a JSON string.
func safe(c byte) bool { return c >= ' ' && c != '"' && c != '\\' }

// needsQuoting is slog's rule for a text value: empty, or holding a space,
// '=', a byte JSON would escape (but a backslash), or a rune that is not
// printable or is a space.
func needsQuoting(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c != '\\' && (c == ' ' || c == '=' || !safe(c)) {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}

const hex = "0123456789abcdef"

// appendEscapedJSONString is slog's JSON string escaping: quotes,
// backslashes and control bytes escaped, invalid UTF-8 replaced by U+FFFD,
// U+2028 and U+2029 escaped.
func appendEscapedJSONString(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if safe(c) {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(b, s[start:]...)
}

// appendJSONFloat is encoding/json's float64, which slog's JSON handler
// uses: 'f' format, but 'e' for very small and very large magnitudes, with
// a one-digit negative exponent written without its zero.
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
