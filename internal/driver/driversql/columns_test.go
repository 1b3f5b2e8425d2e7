package driversql_test

import (
	"testing"

	"github.com/envplane/envplane/internal/driver/driversql"
	"github.com/envplane/envplane/internal/driver/sqlitedialect"
	"github.com/envplane/envplane/internal/schema"
)

func BenchmarkColumns(b *testing.B) {
	obj := &schema.Object{Name: "items", Fields: []schema.Field{
		{Name: "name", Type: schema.TypeText}, {Name: "n", Type: schema.TypeInteger}, {Name: "tag", Type: schema.TypeText},
	}}
	b.ReportAllocs()
	for b.Loop() {
		_ = driversql.Columns(sqlitedialect.Dialect{}, obj)
	}
}

func TestColumns(t *testing.T) {
	obj := &schema.Object{Name: "items", Fields: []schema.Field{{Name: "name"}, {Name: "n"}}}
	want := "`id`, `created_at`, `updated_at`, `etag`, `name`, `n`"
	if got := driversql.Columns(sqlitedialect.Dialect{}, obj); got != want {
		t.Errorf("Columns = %s, want %s", got, want)
	}
	if got := driversql.Columns(sqlitedialect.Dialect{}, &schema.Object{Name: "bare"}); got != "`id`, `created_at`, `updated_at`, `etag`" {
		t.Errorf("Columns of an object without fields = %s", got)
	}
}
