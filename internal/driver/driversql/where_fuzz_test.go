package driversql_test

import (
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/driversql"
	"github.com/envplane/envplane/internal/filter"
)

// FuzzWhere builds filter trees (and a keyset position) from the fuzzer's
// bytes over fixture and checks, for both placeholder styles, that the
// builders never panic, that no value reaches the SQL text (every string
// value carries a marker byte no identifier has, and the text must consist
// of quoted field names, placeholders, keywords and operators only), and
// that there is exactly one argument per placeholder, numbered in order.
func FuzzWhere(f *testing.F) {
	for _, seed := range []string{
		"",
		"\x03\x00\x00\x05abc",
		"\x00\x03\x03\x01\x02\x07\x03\x02\x03\x08",
		"\x02\x04\x00\x04a%_\\*?[",
		"\x01\x02\x03\x05\x01\x09\x03\x06\x02\x0a",
		"\x02\x02\x02\x02\x02\x02\x03\x04\x03\xff\xfe",
		strings.Repeat("\x02", 80) + "\x03\x01\x01\x01",
		"\x00\x04\x03\x00\x07\x04\x03\x02\x05\x02\x03\x07\x06\x01\x04\x01\x03xyz",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, d := range []testDialect{qmark, dollar} {
			g := &gen{data: data}
			expr := g.expr(0)
			args := driversql.NewArgs(d)
			sql, err := driversql.Where(d, fixture, expr, args)
			if err == nil {
				checkSQL(t, d, sql, args.Values())
			}
			order := g.order()
			after := make([]any, 0, len(order)+1)
			for _, o := range order {
				after = append(after, g.value(o.Field))
			}
			after = append(after, g.value("id"))
			args = driversql.NewArgs(d)
			full := driversql.Order(order)
			if sql, err := driversql.After(d, fixture, full, after, args); err == nil {
				checkSQL(t, d, sql, args.Values())
			}
			if sql, err := driversql.OrderBy(d, fixture, full); err == nil {
				checkSQL(t, d, sql, nil)
			}
		}
	})
}

// marker starts every string value the generator makes; no identifier,
// keyword or operator contains it.
const marker = "\x01"

// gen reads a filter tree from fuzz bytes; once they run out it reads
// zeros, which end every branch quickly.
type gen struct {
	data []byte
	pos  int
}

func (g *gen) byte() byte {
	if g.pos >= len(g.data) {
		return 0
	}
	b := g.data[g.pos]
	g.pos++
	return b
}

func (g *gen) str() string {
	n := int(g.byte() % 8)
	var b strings.Builder
	b.WriteString(marker)
	for range n {
		b.WriteByte(g.byte())
	}
	return b.String()
}

// fields are the names the generator picks from: fixture's, the system
// fields and one unknown name.
var fields = []string{"s", "k", "n", "x", "ok", "at", "day", "doc", "id", "created_at", "etag", "nope"}

var ops = []filter.Op{filter.Eq, filter.Ne, filter.Lt, filter.Le, filter.Gt, filter.Ge, "~"}

func (g *gen) expr(depth int) filter.Expr {
	if depth > 100 {
		return nil
	}
	switch g.byte() % 6 {
	case 0:
		terms := make([]filter.Expr, g.byte()%4)
		for i := range terms {
			terms[i] = g.expr(depth + 1)
		}
		return filter.And{Terms: terms}
	case 1:
		terms := make([]filter.Expr, g.byte()%4)
		for i := range terms {
			terms[i] = g.expr(depth + 1)
		}
		return filter.Or{Terms: terms}
	case 2:
		return filter.Not{Term: g.expr(depth + 1)}
	case 3:
		field := fields[int(g.byte())%len(fields)]
		return filter.Compare{Field: field, Op: ops[int(g.byte())%len(ops)], Value: g.value(field)}
	case 4:
		return filter.Prefix{Field: fields[int(g.byte())%len(fields)], Prefix: g.str()}
	default:
		return nil
	}
}

// value returns, mostly, a value of field's Go type; sometimes nil or one
// of another type.
func (g *gen) value(field string) any {
	switch g.byte() % 10 {
	case 0:
		return nil
	case 1:
		return uint16(g.byte()) // never a field's Go type
	case 2:
		return g.str()
	case 3:
		return int64(g.byte())<<56 | int64(g.byte())<<8 | int64(g.byte())
	}
	switch field {
	case "n":
		return int64(g.byte())*1_000_003 - 97
	case "x":
		if g.byte()%5 == 0 {
			return math.NaN()
		}
		return float64(g.byte()) / 7
	case "ok":
		return g.byte()%2 == 0
	case "at", "created_at":
		return time.Unix(int64(g.byte())*86_400_123, int64(g.byte())*1_000_001)
	case "day":
		return "2024-0" + strconv.Itoa(int(g.byte()%9)+1) + "-1" + strconv.Itoa(int(g.byte()%10))
	case "doc":
		return map[string]any{g.str(): []any{g.str(), float64(g.byte()), true, nil}}
	default:
		return g.str()
	}
}

func (g *gen) order() []driver.OrderBy {
	order := make([]driver.OrderBy, g.byte()%4)
	for i := range order {
		order[i] = driver.OrderBy{Field: fields[int(g.byte())%(len(fields)-1)], Desc: g.byte()%2 == 1}
	}
	return order
}

// keywords are the words the builders may write.
var keywords = map[string]bool{
	"AND": true, "OR": true, "NOT": true, "IS": true, "NULL": true, "TRUE": true, "FALSE": true,
	"LIKE": true, "ESCAPE": true, "GLOB": true, "ASC": true, "DESC": true, "NULLS": true, "FIRST": true, "LAST": true,
}

// checkSQL fails unless sql is made only of quoted field names,
// placeholders (one per argument, numbered in order), keywords, operators,
// parentheses, commas and the escape literal '\'.
func checkSQL(t *testing.T, d testDialect, sql string, args []any) {
	t.Helper()
	if strings.Contains(sql, marker) {
		t.Fatalf("a value reached the SQL: %q", sql)
	}
	placeholders := 0
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == ' ' || c == '(' || c == ')' || c == ',' || c == '=':
			i++
		case c == '<' || c == '>':
			i++
			if i < len(sql) && (sql[i] == '=' || sql[i] == '>') {
				i++
			}
		case c == '"':
			end := strings.IndexByte(sql[i+1:], '"')
			if end < 0 {
				t.Fatalf("unterminated identifier in %q", sql)
			}
			name := sql[i+1 : i+1+end]
			if !isField(name) {
				t.Fatalf("identifier %q is no field of the fixture in %q", name, sql)
			}
			i += end + 2
		case c == '?' && !d.numbered:
			placeholders++
			i++
		case c == '$' && d.numbered:
			j := i + 1
			for j < len(sql) && sql[j] >= '0' && sql[j] <= '9' {
				j++
			}
			n, err := strconv.Atoi(sql[i+1 : j])
			if err != nil || n != placeholders+1 {
				t.Fatalf("placeholder %q out of order in %q", sql[i:j], sql)
			}
			placeholders++
			i = j
		case c == '\'' && d.numbered && strings.HasPrefix(sql[i:], `'\'`):
			i += 3
		case c >= 'A' && c <= 'Z':
			j := i
			for j < len(sql) && sql[j] >= 'A' && sql[j] <= 'Z' {
				j++
			}
			if !keywords[sql[i:j]] {
				t.Fatalf("unexpected word %q in %q", sql[i:j], sql)
			}
			i = j
		default:
			t.Fatalf("unexpected %q at %d in %q", c, i, sql)
		}
	}
	if placeholders != len(args) {
		t.Fatalf("%d placeholders, %d arguments in %q", placeholders, len(args), sql)
	}
}

func isField(name string) bool {
	if _, ok := driversql.FieldType(fixture, name); ok {
		return true
	}
	return false
}
