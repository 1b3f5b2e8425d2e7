package drivertest

import (
	"errors"
	"testing"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/schema"
)

// people is a table with a required field, a unique field and a composite
// index, all made by create_table and its add_index steps.
func people(t *testing.T) *schema.Object {
	return object(t, "people", []schema.Field{
		{Name: "name", Type: schema.TypeText, Required: true, MaxLength: 100},
		{Name: "age", Type: schema.TypeInteger, Indexed: true},
		{Name: "email", Type: schema.TypeText, Unique: true},
	}, schema.Index{Name: "by_name_age", Fields: []string{"name", "age"}})
}

func testMigrateCreate(t *testing.T, d driver.Driver) {
	obj := people(t)
	migrate(t, d, nil, obj)
	wantCount(t, d, obj, 0)
	r := rec("p1", 1, map[string]any{"name": "Ada", "age": int64(36), "email": "ada@example.com"})
	insert(t, d, obj, r)
	wantStored(t, d, obj, r)
	// The unique index of create_table is in place.
	err := d.Insert(t.Context(), obj, rec("p2", 2, map[string]any{"name": "Other", "email": "ada@example.com"}))
	wantUnique(t, err, "people", "email")
}

func testMigrateAddField(t *testing.T, d driver.Driver) {
	v1 := object(t, "notes", []schema.Field{text("title")})
	migrate(t, d, nil, v1)
	old := rec("n1", 1, map[string]any{"title": "before"})
	insert(t, d, v1, old)

	v2 := evolve(t, v1, func(o *schema.Object) {
		// The default is the service's to apply on insert, not the engine's.
		o.Fields = append(o.Fields,
			schema.Field{Name: "priority", Type: schema.TypeInteger, Default: int64(7)},
			schema.Field{Name: "tags", Type: schema.TypeJSON},
		)
	})
	migrate(t, d, v1, v2)
	wantStored(t, d, v2, old) // priority and tags are NULL
	fresh := rec("n2", 2, map[string]any{"title": "after", "priority": int64(3), "tags": []any{"x"}})
	insert(t, d, v2, fresh)
	wantStored(t, d, v2, fresh)
	set := changes("n1", 2, map[string]any{"priority": int64(5)})
	got := update(t, d, v2, "n1", set, "")
	wantRecord(t, merged(old, set), got)
}

func testMigrateAddRequiredField(t *testing.T, d driver.Driver) {
	v1 := object(t, "tasks", []schema.Field{text("title")})
	migrate(t, d, nil, v1)
	t1 := rec("t1", 1, map[string]any{"title": "one"})
	t2 := rec("t2", 2, nil)
	insert(t, d, v1, t1, t2)

	v2 := evolve(t, v1, func(o *schema.Object) {
		o.Fields = append(o.Fields, schema.Field{Name: "state", Type: schema.TypeText, Required: true, Default: "open"})
	})
	steps := migrate(t, d, v1, v2)
	// Existing records get the default of a required field.
	wantStored(t, d, v2, merged(t1, driver.Record{"state": "open"}))
	wantStored(t, d, v2, merged(t2, driver.Record{"state": "open"}))
	t3 := rec("t3", 3, map[string]any{"title": "three", "state": "done"})
	insert(t, d, v2, t3)
	apply(t, d, v2, steps)
	wantStored(t, d, v2, t3)
}

func testMigrateRequiredBackfill(t *testing.T, d driver.Driver) {
	v1 := object(t, "tickets", []schema.Field{
		text("title"),
		text("level"),
		{Name: "grade", Type: schema.TypeInteger, Required: true, Default: int64(1)},
	})
	migrate(t, d, nil, v1)
	empty := rec("k1", 1, map[string]any{"title": "no level", "grade": int64(2)})
	set := rec("k2", 2, map[string]any{"title": "has level", "level": "high", "grade": int64(3)})
	blank := rec("k3", 3, map[string]any{"level": "", "grade": int64(4)})
	insert(t, d, v1, empty, set, blank)

	v2 := evolve(t, v1, func(o *schema.Object) {
		setField(o, schema.Field{Name: "level", Type: schema.TypeText, Required: true, Default: "low"})
	})
	migrate(t, d, v1, v2)
	wantStored(t, d, v2, merged(empty, driver.Record{"level": "low"}))
	wantStored(t, d, v2, set)
	wantStored(t, d, v2, blank) // "" is a value, not NULL

	// Retyping a field that was required already drops its values and
	// fills nothing: only becoming required fills.
	v3 := evolve(t, v2, func(o *schema.Object) {
		setField(o, schema.Field{Name: "grade", Type: schema.TypeText, Required: true, Default: "A"})
	})
	migrate(t, d, v2, v3)
	wantStored(t, d, v3, merged(empty, driver.Record{"level": "low", "grade": nil}))
	wantStored(t, d, v3, merged(set, driver.Record{"grade": nil}))
}

func testMigrateAddIndex(t *testing.T, d driver.Driver) {
	v1 := object(t, "events", []schema.Field{text("kind"), integer("size")})
	migrate(t, d, nil, v1)
	e1 := rec("e1", 1, map[string]any{"kind": "a", "size": int64(1)})
	e2 := rec("e2", 2, map[string]any{"kind": "a", "size": int64(1)})
	insert(t, d, v1, e1, e2)

	v2 := evolve(t, v1, func(o *schema.Object) {
		setField(o, schema.Field{Name: "size", Type: schema.TypeInteger, Indexed: true})
		o.Indexes = append(o.Indexes,
			schema.Index{Name: "by_kind_size", Fields: []string{"kind", "size"}},
			schema.Index{Name: "by_time", Fields: []string{"created_at", "kind"}},
		)
	})
	steps := migrate(t, d, v1, v2)
	apply(t, d, v2, steps)
	// Non-unique indexes allow duplicates.
	e3 := rec("e3", 3, map[string]any{"kind": "a", "size": int64(1)})
	insert(t, d, v2, e3)
	wantStored(t, d, v2, e1)
	wantCount(t, d, v2, 3)
}

func testMigrateUniqueIndex(t *testing.T, d driver.Driver) {
	v1 := object(t, "contacts", []schema.Field{text("email"), text("team"), integer("seat")})
	migrate(t, d, nil, v1)
	c1 := rec("c1", 1, map[string]any{"email": "x@example.com", "team": "red", "seat": int64(1)})
	insert(t, d, v1, c1)

	v2 := evolve(t, v1, func(o *schema.Object) {
		setField(o, schema.Field{Name: "email", Type: schema.TypeText, Unique: true})
		o.Indexes = append(o.Indexes, schema.Index{Name: "team_seat", Fields: []string{"team", "seat"}, Unique: true})
	})
	migrate(t, d, v1, v2)

	err := d.Insert(t.Context(), v2, rec("c2", 2, map[string]any{"email": "x@example.com"}))
	wantUnique(t, err, "contacts", "email")
	wantGone(t, d, v2, "c2")
	err = d.Insert(t.Context(), v2, rec("c3", 3, map[string]any{"email": "y@example.com", "team": "red", "seat": int64(1)}))
	wantUnique(t, err, "contacts", "team", "seat")
	wantGone(t, d, v2, "c3")

	// NULLs are distinct, in single and composite unique indexes.
	insert(t, d, v2,
		rec("n1", 4, nil),
		rec("n2", 5, nil),
		rec("n3", 6, map[string]any{"team": "red"}),
		rec("n4", 7, map[string]any{"team": "red"}),
	)

	// An update that would duplicate is refused and changes nothing.
	n1 := get(t, d, v2, "n1")
	_, err = d.Update(t.Context(), v2, "n1", changes("n1", 2, map[string]any{"email": "x@example.com"}), "")
	wantUnique(t, err, "contacts", "email")
	wantRecord(t, n1, get(t, d, v2, "n1"))
	// Setting a record's own value again is no conflict.
	set := changes("c1", 2, map[string]any{"email": "x@example.com", "seat": int64(1)})
	wantRecord(t, merged(c1, set), update(t, d, v2, "c1", set, ""))
	// A freed value can be taken.
	set = changes("c1", 3, map[string]any{"email": "z@example.com"})
	update(t, d, v2, "c1", set, "")
	insert(t, d, v2, rec("c4", 8, map[string]any{"email": "x@example.com"}))
}

func testMigrateUniqueIndexOverDuplicates(t *testing.T, d driver.Driver) {
	v1 := object(t, "accounts", []schema.Field{text("email")})
	migrate(t, d, nil, v1)
	insert(t, d, v1,
		rec("a1", 1, map[string]any{"email": "dup@example.com"}),
		rec("a2", 2, map[string]any{"email": "dup@example.com"}),
	)
	v2 := evolve(t, v1, func(o *schema.Object) {
		setField(o, schema.Field{Name: "email", Type: schema.TypeText, Unique: true})
		o.Fields = append(o.Fields, text("note"))
	})
	steps := schema.Plan(v1, v2)
	if err := d.Migrate(t.Context(), Next(t, d, v2, steps)); err == nil {
		t.Fatal("Migrate adding a unique index over duplicates succeeded")
	}
	// Nothing of the failed migration is left: no note field, no index.
	if err := d.Insert(t.Context(), v2, rec("a3", 3, map[string]any{"note": "x"})); err == nil {
		t.Error("Insert with the field of a failed migration succeeded")
	}
	insert(t, d, v1, rec("a4", 4, map[string]any{"email": "dup@example.com"}))

	// Once the duplicates are gone the same steps converge.
	for _, id := range []string{"a2", "a4"} {
		if err := d.Delete(t.Context(), v1, id, ""); err != nil {
			t.Fatalf("Delete(%s): %v", id, err)
		}
	}
	apply(t, d, v2, steps)
	err := d.Insert(t.Context(), v2, rec("a5", 5, map[string]any{"email": "dup@example.com", "note": "x"}))
	wantUnique(t, err, "accounts", "email")
	insert(t, d, v2, rec("a6", 6, map[string]any{"email": "new@example.com", "note": "x"}))
}

func testMigrateDropField(t *testing.T, d driver.Driver) {
	v1 := object(t, "cards", []schema.Field{
		text("title"),
		{Name: "rank", Type: schema.TypeInteger, Indexed: true},
		{Name: "code", Type: schema.TypeText, Unique: true},
		text("color"),
	}, schema.Index{Name: "by_color_rank", Fields: []string{"color", "rank"}})
	migrate(t, d, nil, v1)
	c1 := rec("c1", 1, map[string]any{"title": "one", "rank": int64(1), "code": "A", "color": "red"})
	insert(t, d, v1, c1)

	// Dropping indexed and unique fields drops their indexes first.
	v2 := evolve(t, v1, func(o *schema.Object) {
		removeField(o, "rank")
		removeField(o, "code")
		o.Indexes = nil
	})
	steps := migrate(t, d, v1, v2)
	apply(t, d, v2, steps)
	want := rec("c1", 1, map[string]any{"title": "one", "color": "red"})
	wantStored(t, d, v2, want)

	// A field added back under the same name starts empty.
	v3 := evolve(t, v2, func(o *schema.Object) {
		o.Fields = append(o.Fields, integer("rank"), schema.Field{Name: "code", Type: schema.TypeText, Unique: true})
	})
	migrate(t, d, v2, v3)
	wantStored(t, d, v3, want)
	insert(t, d, v3, rec("c2", 2, map[string]any{"rank": int64(2), "code": "A"}))
}

func testMigrateChangeType(t *testing.T, d driver.Driver) {
	v1 := object(t, "parts", []schema.Field{
		text("name"),
		{Name: "size", Type: schema.TypeInteger, Indexed: true},
		integer("weight"),
	}, schema.Index{Name: "by_size_name", Fields: []string{"size", "name"}})
	migrate(t, d, nil, v1)
	p1 := rec("p1", 1, map[string]any{"name": "bolt", "size": int64(12), "weight": int64(3)})
	insert(t, d, v1, p1)

	v2 := evolve(t, v1, func(o *schema.Object) {
		setField(o, schema.Field{Name: "size", Type: schema.TypeText, Indexed: true})
	})
	steps := migrate(t, d, v1, v2)
	// The values of the retyped field are gone; the others stay.
	wantStored(t, d, v2, rec("p1", 1, map[string]any{"name": "bolt", "weight": int64(3)}))
	p2 := rec("p2", 2, map[string]any{"name": "nut", "size": "M8", "weight": int64(1)})
	insert(t, d, v2, p2)
	wantStored(t, d, v2, p2)
	if got := queryIDs(t, d, v2, driver.Query{Filter: eq("size", "M8")}); !equalIDs(got, "p2") {
		t.Errorf("size = M8 matched %v; want [p2]", got)
	}

	// Re-applying the change once the column has the new type keeps values.
	apply(t, d, v2, steps)
	wantStored(t, d, v2, p2)

	// And a change to a type with other Go values works the other way.
	v3 := evolve(t, v2, func(o *schema.Object) {
		setField(o, schema.Field{Name: "size", Type: schema.TypeBoolean})
	})
	migrate(t, d, v2, v3)
	wantStored(t, d, v3, rec("p2", 2, map[string]any{"name": "nut", "weight": int64(1)}))
	p3 := rec("p3", 3, map[string]any{"size": false})
	insert(t, d, v3, p3)
	wantStored(t, d, v3, p3)
}

func testMigrateChangeTypeOfUniqueField(t *testing.T, d driver.Driver) {
	v1 := object(t, "codes", []schema.Field{{Name: "code", Type: schema.TypeInteger, Unique: true}})
	migrate(t, d, nil, v1)
	insert(t, d, v1, rec("c1", 1, map[string]any{"code": int64(1)}))
	v2 := evolve(t, v1, func(o *schema.Object) {
		setField(o, schema.Field{Name: "code", Type: schema.TypeText, Unique: true})
	})
	migrate(t, d, v1, v2)
	insert(t, d, v2, rec("c2", 2, map[string]any{"code": "x"}))
	err := d.Insert(t.Context(), v2, rec("c3", 3, map[string]any{"code": "x"}))
	wantUnique(t, err, "codes", "code")
}

func testMigrateDropIndex(t *testing.T, d driver.Driver) {
	v1 := object(t, "slots", []schema.Field{
		{Name: "email", Type: schema.TypeText, Unique: true},
		text("a"), text("b"),
	}, schema.Index{Name: "a_b", Fields: []string{"a", "b"}, Unique: true})
	migrate(t, d, nil, v1)
	r1 := rec("s1", 1, map[string]any{"email": "e", "a": "x", "b": "y"})
	insert(t, d, v1, r1)

	v2 := evolve(t, v1, func(o *schema.Object) {
		setField(o, text("email"))
		o.Indexes = nil
	})
	steps := migrate(t, d, v1, v2)
	apply(t, d, v2, steps)
	r2 := rec("s2", 2, map[string]any{"email": "e", "a": "x", "b": "y"})
	insert(t, d, v2, r2)
	wantStored(t, d, v2, r1)
	wantStored(t, d, v2, r2)

	// An index whose definition changes is dropped and added again.
	v3 := evolve(t, v2, func(o *schema.Object) {
		o.Indexes = []schema.Index{{Name: "a_b", Fields: []string{"a"}}}
	})
	migrate(t, d, v2, v3)
	v4 := evolve(t, v3, func(o *schema.Object) {
		o.Indexes = []schema.Index{{Name: "a_b", Fields: []string{"b", "a"}}}
	})
	migrate(t, d, v3, v4)
	wantCount(t, d, v4, 2)
}

// testMigrateConverges applies every plan twice, and then the whole history
// again, as a service retrying after a failure would.
func testMigrateConverges(t *testing.T, d driver.Driver) {
	v1 := people(t)
	v2 := evolve(t, v1, func(o *schema.Object) {
		setField(o, schema.Field{Name: "age", Type: schema.TypeNumber})
		setField(o, schema.Field{Name: "email", Type: schema.TypeText})
		removeField(o, "name")
		o.Fields = append(o.Fields,
			schema.Field{Name: "city", Type: schema.TypeText, Indexed: true},
			schema.Field{Name: "code", Type: schema.TypeText, Unique: true},
		)
		o.Indexes = []schema.Index{{Name: "by_city_age", Fields: []string{"city", "age"}, Unique: true}}
	})
	create := schema.Plan(nil, v1)
	evolution := schema.Plan(v1, v2)

	apply(t, d, v1, create)
	apply(t, d, v1, create)
	p1 := rec("p1", 1, map[string]any{"name": "Ada", "age": int64(36), "email": "ada@example.com"})
	insert(t, d, v1, p1)
	apply(t, d, v1, create)
	wantStored(t, d, v1, p1)

	apply(t, d, v2, evolution)
	want := rec("p1", 1, map[string]any{"email": "ada@example.com"})
	wantStored(t, d, v2, want)
	p2 := rec("p2", 2, map[string]any{"age": 1.5, "city": "Oslo", "code": "X"})
	insert(t, d, v2, p2)
	apply(t, d, v2, evolution)
	wantStored(t, d, v2, want)
	wantStored(t, d, v2, p2)
	err := d.Insert(t.Context(), v2, rec("p3", 3, map[string]any{"code": "X"}))
	wantUnique(t, err, "people", "code")
	err = d.Insert(t.Context(), v2, rec("p4", 4, map[string]any{"city": "Oslo", "age": 1.5}))
	wantUnique(t, err, "people", "city", "age")
	// Steps of no change at all converge too.
	apply(t, d, v2, nil)
	wantCount(t, d, v2, 2)
}

func testMigrateMetadataOnly(t *testing.T, d driver.Driver) {
	v1 := object(t, "labels", []schema.Field{text("name"), integer("rank")})
	migrate(t, d, nil, v1)
	l1 := rec("l1", 1, map[string]any{"name": "x"})
	insert(t, d, v1, l1)
	v2 := evolve(t, v1, func(o *schema.Object) {
		setField(o, schema.Field{Name: "name", Type: schema.TypeText, Description: "what it says", Default: "y"})
		setField(o, schema.Field{Name: "rank", Type: schema.TypeInteger, Required: false, Default: int64(3)})
	})
	steps := migrate(t, d, v1, v2)
	if len(steps) == 0 {
		t.Fatal("Plan found no change")
	}
	// A default on a field that is not required fills nothing.
	wantStored(t, d, v2, l1)
}

func testDropObject(t *testing.T, d driver.Driver) {
	obj := people(t)
	migrate(t, d, nil, obj)
	insert(t, d, obj, rec("p1", 1, map[string]any{"name": "Ada", "email": "a@example.com"}))
	if err := d.DropObject(t.Context(), obj.Name); err != nil {
		t.Fatalf("DropObject: %v", err)
	}
	if err := d.DropObject(t.Context(), obj.Name); err != nil {
		t.Errorf("DropObject of a dropped table: %v", err)
	}
	if err := d.DropObject(t.Context(), "never_made"); err != nil {
		t.Errorf("DropObject of a missing table: %v", err)
	}
	if _, err := d.Get(t.Context(), obj, "p1"); err == nil {
		t.Error("Get on a dropped table succeeded")
	}

	// The same object can be made again, empty, with its indexes.
	migrate(t, d, nil, obj)
	wantCount(t, d, obj, 0)
	p1 := rec("p1", 2, map[string]any{"name": "Bea", "email": "a@example.com"})
	insert(t, d, obj, p1)
	wantStored(t, d, obj, p1)
	err := d.Insert(t.Context(), obj, rec("p2", 3, map[string]any{"name": "Cy", "email": "a@example.com"}))
	wantUnique(t, err, "people", "email")
}

func testMissingTable(t *testing.T, d driver.Driver) {
	obj := object(t, "ghosts", []schema.Field{text("name")})
	ctx := t.Context()
	if err := d.Insert(ctx, obj, rec("g1", 1, nil)); err == nil {
		t.Error("Insert into a missing table succeeded")
	}
	if _, err := d.Get(ctx, obj, "g1"); err == nil {
		t.Error("Get from a missing table succeeded")
	}
	if _, err := d.Query(ctx, obj, driver.Query{}); err == nil {
		t.Error("Query of a missing table succeeded")
	}
	if _, err := d.Count(ctx, obj, nil); err == nil {
		t.Error("Count of a missing table succeeded")
	}
	if err := d.Migrate(ctx, Next(t, d, obj, []schema.Step{{Kind: schema.StepAddField, Target: "x", Field: &schema.Field{Name: "x", Type: schema.TypeText}}})); err == nil {
		t.Error("Migrate add_field on a missing table succeeded")
	}
	if _, err := d.Batch(ctx, []driver.Op{{Kind: driver.OpInsert, Object: obj, Record: rec("g1", 1, nil)}}); err == nil {
		t.Error("Batch into a missing table succeeded")
	}
	if _, err := d.Update(ctx, obj, "g1", changes("g1", 2, nil), ""); err == nil || errors.Is(err, driver.ErrEtagMismatch) {
		t.Errorf("Update in a missing table = %v; want an error", err)
	}
}
