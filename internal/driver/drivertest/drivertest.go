// Package drivertest is the conformance suite of driver.Driver: every engine
// runs Run, so that the data and metadata services get the same answers
// whichever database an environment lives in.
//
// Semantics the suite pins down, beyond the comments of package driver:
//
//   - Values have the Go types of schema.Field.Default on the way out,
//     exactly: int64 keeps all 64 bits (no float64 detour), float64 is
//     exact, timestamps come back in UTC truncated to the microsecond
//     (finer input is truncated, not rounded), dates are "YYYY-MM-DD"
//     strings, JSON comes back as encoding/json decodes it (numbers are
//     float64), "" and false are values, not NULL. A NULL field may come
//     back absent or nil; the suite treats both alike.
//   - Text and select values order and compare by bytes (Go's string order,
//     PostgreSQL's "C" collation), so "Apple" < "apple"; booleans order
//     false < true.
//   - NULL sorts before every value in ascending order and after every
//     value in descending order. Query always breaks ties by id ascending,
//     whatever the directions of the order keys; without Order a query is
//     in id order.
//   - Keyset paging: Query.After holds the values of the order keys of the
//     last record served (nil for NULL) followed by its id; the next page
//     starts strictly after that position in the order above, even if that
//     record is gone. Limit <= 0 means no limit.
//   - Filters use two-valued logic: a comparison with a NULL field is false
//     except `!= value` (NULL differs from every value), which is true;
//     ordering comparisons never match NULL; Not negates exactly, so
//     Not(x > 2) matches records whose x is NULL. Prefix is case-sensitive,
//     its % _ and \ are literal, and it never matches NULL. An empty And
//     matches every record and an empty Or none.
//   - Unique indexes treat NULLs as distinct (any number of records may
//     leave a unique field empty). A violation is a *driver.UniqueViolationError
//     naming the object and the index's fields in index order.
//   - Engines apply no defaults on insert (the service does). Migrate fills
//     the NULLs of a field with its default in two cases only: add_field of
//     a required field with a default (existing records get it) and
//     change_field that makes a field required (Previous.Required false).
//     A change_field of type drops the field's values, and fills nothing if
//     the field was required already; re-applying it once the column has
//     the new type changes nothing.
//   - A failed Migrate leaves the table as it was (where the engine has
//     transactional DDL, as SQLite and PostgreSQL do), and applying the same
//     steps again after fixing the cause converges.
//   - Insert and update reject fields the table does not have.
//   - Operations on a table that does not exist fail (with some error).
//   - A canceled context fails the call with an error wrapping
//     context.Canceled.
package drivertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/schema"
)

// Run runs the conformance suite against the engine that open makes.
//
// open must return a new driver over its own, empty database on every call
// (two drivers from two calls must not see each other's tables), and close
// it when t ends (t.Cleanup). It is called from parallel subtests, so it
// must be safe for concurrent use. One case closes its driver itself, so
// the cleanup must tolerate a second Close (ignore its error).
func Run(t *testing.T, open func(t *testing.T) driver.Driver) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open func(t *testing.T) driver.Driver)
	}{
		{"MigrateCreate", withDriver(testMigrateCreate)},
		{"MigrateAddField", withDriver(testMigrateAddField)},
		{"MigrateAddRequiredField", withDriver(testMigrateAddRequiredField)},
		{"MigrateRequiredBackfill", withDriver(testMigrateRequiredBackfill)},
		{"MigrateAddIndex", withDriver(testMigrateAddIndex)},
		{"MigrateUniqueIndex", withDriver(testMigrateUniqueIndex)},
		{"MigrateUniqueIndexOverDuplicates", withDriver(testMigrateUniqueIndexOverDuplicates)},
		{"MigrateDropField", withDriver(testMigrateDropField)},
		{"MigrateChangeType", withDriver(testMigrateChangeType)},
		{"MigrateChangeTypeOfUniqueField", withDriver(testMigrateChangeTypeOfUniqueField)},
		{"MigrateDropIndex", withDriver(testMigrateDropIndex)},
		{"MigrateConverges", withDriver(testMigrateConverges)},
		{"MigrateMetadataOnly", withDriver(testMigrateMetadataOnly)},
		{"DropObject", withDriver(testDropObject)},
		{"MissingTable", withDriver(testMissingTable)},
		{"RoundTrip", withDriver(testRoundTrip)},
		{"GetMissing", withDriver(testGetMissing)},
		{"InsertDuplicateID", withDriver(testInsertDuplicateID)},
		{"InsertUnknownField", withDriver(testInsertUnknownField)},
		{"Update", withDriver(testUpdate)},
		{"UpdateETag", withDriver(testUpdateETag)},
		{"Delete", withDriver(testDelete)},
		{"Query", withDriver(testQuery)},
		{"QueryPrefixLiteral", withDriver(testQueryPrefixLiteral)},
		{"QueryPageAfterDeleted", withDriver(testQueryPageAfterDeleted)},
		{"PagingStableUnderConcurrentInserts", withDriver(testPagingStableUnderConcurrentInserts)},
		{"Batch", withDriver(testBatch)},
		{"BatchEmpty", withDriver(testBatchEmpty)},
		{"BatchAtomic", testBatchAtomic},
		{"Isolation", testIsolation},
		{"ConcurrentWriters", withDriver(testConcurrentWriters)},
		{"ConcurrentCompareAndSwap", withDriver(testConcurrentCompareAndSwap)},
		{"NoAliasing", withDriver(testNoAliasing)},
		{"CanceledContext", withDriver(testCanceledContext)},
		{"Close", withDriver(testClose)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open)
		})
	}
}

// withDriver adapts a case that needs one driver.
func withDriver(fn func(t *testing.T, d driver.Driver)) func(*testing.T, func(*testing.T) driver.Driver) {
	return func(t *testing.T, open func(*testing.T) driver.Driver) { fn(t, open(t)) }
}

// base is the instant fixture times count from.
var base = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// at returns base + d.
func at(d time.Duration) time.Time { return base.Add(d) }

// object returns a valid object definition; the suite checks its own
// fixtures so that a failure points at the engine, not at the fixture.
func object(t *testing.T, name string, fields []schema.Field, indexes ...schema.Index) *schema.Object {
	t.Helper()
	o := &schema.Object{Name: name, Fields: fields, Indexes: indexes}
	if v := o.Validate(); len(v) > 0 {
		t.Fatalf("fixture %s is invalid: %v", name, v)
	}
	return o
}

// evolve returns a copy of o with its fields changed by edit.
func evolve(t *testing.T, o *schema.Object, edit func(o *schema.Object)) *schema.Object {
	t.Helper()
	n := *o
	n.Fields = slices.Clone(o.Fields)
	n.Indexes = slices.Clone(o.Indexes)
	edit(&n)
	if v := n.Validate(); len(v) > 0 {
		t.Fatalf("fixture %s is invalid: %v", n.Name, v)
	}
	return &n
}

// setField replaces the field of the same name.
func setField(o *schema.Object, f schema.Field) {
	for i := range o.Fields {
		if o.Fields[i].Name == f.Name {
			o.Fields[i] = f
			return
		}
	}
	panic("drivertest: no field " + f.Name)
}

// removeField removes the named field.
func removeField(o *schema.Object, name string) {
	o.Fields = slices.DeleteFunc(o.Fields, func(f schema.Field) bool { return f.Name == name })
}

// migrate plans from → to and applies it.
func migrate(t *testing.T, d driver.Driver, from, to *schema.Object) []schema.Step {
	t.Helper()
	steps := schema.Plan(from, to)
	apply(t, d, to, steps)
	return steps
}

// apply applies steps to obj's table.
func apply(t *testing.T, d driver.Driver, obj *schema.Object, steps []schema.Step) {
	t.Helper()
	if err := d.Migrate(t.Context(), Next(t, d, obj, steps)); err != nil {
		t.Fatalf("Migrate(%s, %s): %v", obj.Name, describe(steps), err)
	}
}

func describe(steps []schema.Step) string {
	var s []string
	for _, st := range steps {
		s = append(s, st.Description)
	}
	return fmt.Sprint(s)
}

// rec returns a record with every system field: created_at and updated_at
// are base + seq microseconds and the etag is "v1-<id>".
func rec(id string, seq int, fields map[string]any) driver.Record {
	r := driver.Record{
		schema.FieldID:        id,
		schema.FieldCreatedAt: at(time.Duration(seq) * time.Microsecond),
		schema.FieldUpdatedAt: at(time.Duration(seq) * time.Microsecond),
		schema.FieldETag:      "v1-" + id,
	}
	for k, v := range fields {
		r[k] = v
	}
	return r
}

// merged returns r with set applied, as an update leaves it.
func merged(r, set driver.Record) driver.Record {
	out := driver.Record{}
	for k, v := range r {
		out[k] = v
	}
	for k, v := range set {
		out[k] = v
	}
	return out
}

// changes returns the set of an update of id: fields plus a new
// updated_at and etag.
func changes(id string, version int, fields map[string]any) driver.Record {
	set := driver.Record{
		schema.FieldUpdatedAt: at(time.Hour + time.Duration(version)*time.Microsecond),
		schema.FieldETag:      fmt.Sprintf("v%d-%s", version, id),
	}
	for k, v := range fields {
		set[k] = v
	}
	return set
}

func insert(t *testing.T, d driver.Driver, obj *schema.Object, recs ...driver.Record) {
	t.Helper()
	for _, r := range recs {
		if err := d.Insert(t.Context(), obj, r); err != nil {
			t.Fatalf("Insert(%s, %v): %v", obj.Name, r[schema.FieldID], err)
		}
	}
}

func get(t *testing.T, d driver.Driver, obj *schema.Object, id string) driver.Record {
	t.Helper()
	r, err := d.Get(t.Context(), obj, id)
	if err != nil {
		t.Fatalf("Get(%s, %s): %v", obj.Name, id, err)
	}
	checkUTC(t, r)
	return r
}

func update(t *testing.T, d driver.Driver, obj *schema.Object, id string, set driver.Record, ifETag string) driver.Record {
	t.Helper()
	r, err := d.Update(t.Context(), obj, id, set, ifETag)
	if err != nil {
		t.Fatalf("Update(%s, %s): %v", obj.Name, id, err)
	}
	return r
}

// wantRecord fails unless got is want (NULL as absent or nil alike).
func wantRecord(t *testing.T, want, got driver.Record) {
	t.Helper()
	if diff := cmp.Diff(clean(want), clean(got)); diff != "" {
		t.Errorf("record %v (-want +got):\n%s", want[schema.FieldID], diff)
	}
	checkUTC(t, got)
}

// wantStored fails unless the stored record id is want.
func wantStored(t *testing.T, d driver.Driver, obj *schema.Object, want driver.Record) {
	t.Helper()
	wantRecord(t, want, get(t, d, obj, want[schema.FieldID].(string)))
}

// wantGone fails unless record id does not exist.
func wantGone(t *testing.T, d driver.Driver, obj *schema.Object, id string) {
	t.Helper()
	if r, err := d.Get(t.Context(), obj, id); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("Get(%s, %s) = %v, %v; want ErrNotFound", obj.Name, id, r, err)
	}
}

// wantCount fails unless obj has n records.
func wantCount(t *testing.T, d driver.Driver, obj *schema.Object, n int64) {
	t.Helper()
	got, err := d.Count(t.Context(), obj, nil)
	if err != nil {
		t.Fatalf("Count(%s): %v", obj.Name, err)
	}
	if got != n {
		t.Errorf("Count(%s) = %d, want %d", obj.Name, got, n)
	}
}

// wantUnique fails unless err is a unique violation of fields on object.
func wantUnique(t *testing.T, err error, object string, fields ...string) {
	t.Helper()
	var uv *driver.UniqueViolationError
	if !errors.As(err, &uv) {
		t.Errorf("error = %v; want *UniqueViolationError on %s %v", err, object, fields)
		return
	}
	if uv.Object != object || !slices.Equal(uv.Fields, fields) {
		t.Errorf("UniqueViolationError{Object: %q, Fields: %q}; want {%q, %q}", uv.Object, uv.Fields, object, fields)
	}
}

// clean drops NULL fields, which an engine may return as absent or nil.
func clean(r driver.Record) map[string]any {
	if r == nil {
		return nil
	}
	out := make(map[string]any, len(r))
	for k, v := range r {
		if v != nil {
			out[k] = v
		}
	}
	return out
}

// checkUTC fails if a timestamp of r is not in UTC.
func checkUTC(t *testing.T, r driver.Record) {
	t.Helper()
	for k, v := range r {
		if ts, ok := v.(time.Time); ok && ts.Location() != time.UTC {
			t.Errorf("%s = %v is in %v; want UTC", k, ts, ts.Location())
		}
	}
}

func ids(recs []driver.Record) []string {
	out := make([]string, 0, len(recs))
	for _, r := range recs {
		id, _ := r[schema.FieldID].(string)
		out = append(out, id)
	}
	return out
}

// queryIDs runs q and returns the ids in the order served.
func queryIDs(t *testing.T, d driver.Driver, obj *schema.Object, q driver.Query) []string {
	t.Helper()
	recs, err := d.Query(t.Context(), obj, q)
	if err != nil {
		t.Fatalf("Query(%s, %+v): %v", obj.Name, q, err)
	}
	return ids(recs)
}

// Field shorthands for fixtures.
func text(name string) schema.Field    { return schema.Field{Name: name, Type: schema.TypeText} }
func integer(name string) schema.Field { return schema.Field{Name: name, Type: schema.TypeInteger} }

const (
	maxInt = math.MaxInt64
	minInt = math.MinInt64
)

// ctxCanceled returns a context that is already canceled.
func ctxCanceled(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	return ctx
}

// Next returns the change that applies steps to obj's table after the
// version the ledger holds of it, as the metadata service makes one: From
// is that version, Object a copy of obj at the next version, Definition
// obj's JSON. It fails tb when the ledger cannot be read.
func Next(tb testing.TB, d driver.Driver, obj *schema.Object, steps []schema.Step) driver.Change {
	tb.Helper()
	entries, err := d.Ledger(context.Background())
	if err != nil && !errors.Is(err, driver.ErrNoLedger) {
		tb.Fatalf("Ledger: %v", err)
	}
	var from int64
	for _, e := range entries {
		if e.Object == obj.Name {
			from = e.Version
		}
	}
	next := *obj
	next.Version = from + 1
	def, err := json.Marshal(&next)
	if err != nil {
		tb.Fatalf("encode %s: %v", obj.Name, err)
	}
	applied, _ := json.Marshal(steps)
	return driver.Change{Object: &next, Steps: steps, From: from, Definition: def, Applied: applied, ApplyTime: time.Now().UTC()}
}
