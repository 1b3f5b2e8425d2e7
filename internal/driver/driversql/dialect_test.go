package driversql_test

import (
	"strconv"
	"strings"

	"github.com/envplane/envplane/internal/driver/driversql"
)

// testDialect stands in for an engine: positional ? markers and GLOB like
// SQLite, or numbered $n markers and LIKE … ESCAPE like PostgreSQL. Values
// pass through Encode unchanged once checked, so a test can see them in the
// arguments.
type testDialect struct{ numbered bool }

func (testDialect) Quote(ident string) string {
	return `"` + strings.ReplaceAll(ident, `"`, `""`) + `"`
}

func (d testDialect) Placeholder(n int) string {
	if d.numbered {
		return "$" + strconv.Itoa(n)
	}
	return "?"
}

func (testDialect) Encode(fieldType string, v any) (any, error) {
	if _, _, err := driversql.CheckValue(fieldType, v); err != nil {
		return nil, err
	}
	return v, nil
}

func (testDialect) Decode(_ string, v any) (any, error) { return v, nil }

func (d testDialect) Prefix(column, _, prefix string, args *driversql.Args) string {
	if d.numbered {
		return column + ` LIKE ` + args.Add(prefix+"%") + ` ESCAPE '\'`
	}
	return column + ` GLOB ` + args.Add(prefix+"*")
}

var (
	qmark  = testDialect{}
	dollar = testDialect{numbered: true}
)
