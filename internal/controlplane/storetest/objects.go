package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envplane/envplane/internal/controlplane"
)

// objectTests are the cases of the ObjectStore part, run by Run.
var objectTests = []struct {
	name string
	fn   func(t *testing.T, s controlplane.Store)
}{
	{"ObjectRoundTrip", testObjectRoundTrip},
	{"ObjectVersionConflict", testObjectVersionConflict},
	{"ObjectCreateTwice", testObjectCreateTwice},
	{"ObjectEnvironmentMissing", testObjectEnvironmentMissing},
	{"ListObjectDefinitions", testListObjectDefinitions},
	{"ObjectIsolation", testObjectIsolation},
	{"ObjectDeleteIf", testObjectDeleteIf},
	{"ObjectMigrations", testObjectMigrations},
	{"DeleteObject", testDeleteObject},
	{"ObjectEnvironmentCascade", testObjectEnvironmentCascade},
	{"RaceObjectCreate", testRaceObjectCreate},
	{"RaceObjectUpdate", testRaceObjectUpdate},
}

// objectRacers is how many goroutines race to put one object.
const objectRacers = 10

// newEnvForObjects creates an organization and one environment in it.
func newEnvForObjects(t *testing.T, s controlplane.Store, slug string) controlplane.Environment {
	t.Helper()
	org := mustCreateOrg(t, s, slug+"-org")
	return mustCreateEnv(t, s, newEnv(org.ID, slug), controlplane.DefaultIfFirst)
}

// newDefinition returns an encoded definition unique to this call, with every
// byte value (NUL and invalid UTF-8 included), so only an exact round trip
// matches.
func newDefinition(name string) []byte {
	b := []byte(`{"name":"` + name + `","id":"` + newID() + `"}`)
	for v := range 256 {
		b = append(b, byte(v))
	}
	return b
}

func newObject(envID, name string) controlplane.ObjectDefinition {
	now := fixtureTime()
	return controlplane.ObjectDefinition{
		EnvironmentID: envID,
		Name:          name,
		Definition:    newDefinition(name),
		CreateTime:    now,
		UpdateTime:    now,
	}
}

func newMigration(steps string, at time.Time) controlplane.ObjectMigration {
	return controlplane.ObjectMigration{Steps: []byte(steps), ApplyTime: at}
}

func mustPutObject(t *testing.T, s controlplane.Store, def controlplane.ObjectDefinition, expected int64, m controlplane.ObjectMigration) controlplane.ObjectDefinition {
	t.Helper()
	got, err := s.PutObjectDefinition(t.Context(), def, expected, m)
	if err != nil {
		t.Fatalf("PutObjectDefinition(%q, expected %d): %v", def.Name, expected, err)
	}
	return got
}

func mustGetObject(t *testing.T, s controlplane.Store, envID, name string) controlplane.ObjectDefinition {
	t.Helper()
	got, err := s.GetObjectDefinition(t.Context(), envID, name)
	if err != nil {
		t.Fatalf("GetObjectDefinition(%q): %v", name, err)
	}
	return got
}

func mustListMigrations(t *testing.T, s controlplane.Store, envID, name string) []controlplane.ObjectMigration {
	t.Helper()
	got, err := s.ListObjectMigrations(t.Context(), envID, name)
	if err != nil {
		t.Fatalf("ListObjectMigrations(%q): %v", name, err)
	}
	return got
}

// allObjects lists every definition of an environment, following the pages.
func allObjects(t *testing.T, s controlplane.Store, envID string) []controlplane.ObjectDefinition {
	t.Helper()
	var out []controlplane.ObjectDefinition
	page := controlplane.Page{Limit: 3}
	for {
		defs, err := s.ListObjectDefinitions(t.Context(), envID, page)
		if err != nil {
			t.Fatalf("ListObjectDefinitions: %v", err)
		}
		out = append(out, defs...)
		if len(defs) < page.Limit {
			return out
		}
		page.After = defs[len(defs)-1].Name
	}
}

func testObjectRoundTrip(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	env := newEnvForObjects(t, s, "dev")

	def := newObject(env.ID, "contact")
	def.Version = 42 // ignored: the stored version is expected+1
	got := mustPutObject(t, s, def, 0, newMigration(`[{"op":"create"}]`, def.UpdateTime))
	want := def
	want.Version = 1
	diff(t, "created definition", want, got)
	diff(t, "read definition", want, mustGetObject(t, s, env.ID, "contact"))

	// A new version keeps the first CreateTime, whatever the caller sends.
	next := newObject(env.ID, "contact")
	next.CreateTime = def.CreateTime.Add(time.Hour)
	next.UpdateTime = def.UpdateTime.Add(time.Minute)
	got = mustPutObject(t, s, next, 1, newMigration(`[{"op":"add_field"}]`, next.UpdateTime))
	want = next
	want.Version, want.CreateTime = 2, def.CreateTime
	diff(t, "updated definition", want, got)
	diff(t, "read updated definition", want, mustGetObject(t, s, env.ID, "contact"))

	_, err := s.GetObjectDefinition(ctx, env.ID, "unknown")
	wantErr(t, "GetObjectDefinition(unknown)", err, controlplane.ErrNotFound)
	_, err = s.GetObjectDefinition(ctx, newID(), "contact")
	wantErr(t, "GetObjectDefinition(unknown environment)", err, controlplane.ErrNotFound)
}

func testObjectVersionConflict(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	env := newEnvForObjects(t, s, "dev")
	def := newObject(env.ID, "contact")
	mustPutObject(t, s, def, 0, newMigration(`["v1"]`, def.UpdateTime))
	v2 := mustPutObject(t, s, newObject(env.ID, "contact"), 1, newMigration(`["v2"]`, def.UpdateTime))
	history := mustListMigrations(t, s, env.ID, "contact")

	for _, expected := range []int64{1, 3, 100} {
		stale := newObject(env.ID, "contact")
		_, err := s.PutObjectDefinition(ctx, stale, expected, newMigration(`["stale"]`, def.UpdateTime))
		wantErr(t, fmt.Sprintf("PutObjectDefinition(expected %d, stored 2)", expected), err, controlplane.ErrVersionConflict)
	}
	diff(t, "definition after stale puts", v2, mustGetObject(t, s, env.ID, "contact"))
	diff(t, "migrations after stale puts", history, mustListMigrations(t, s, env.ID, "contact"))

	// A definition that does not exist cannot be at any version.
	_, err := s.PutObjectDefinition(ctx, newObject(env.ID, "missing"), 1, newMigration(`[]`, def.UpdateTime))
	wantErr(t, "PutObjectDefinition(missing, expected 1)", err, controlplane.ErrVersionConflict)
	_, err = s.GetObjectDefinition(ctx, env.ID, "missing")
	wantErr(t, "GetObjectDefinition(missing) after the conflict", err, controlplane.ErrNotFound)
	diff(t, "migrations of missing", []controlplane.ObjectMigration(nil), mustListMigrations(t, s, env.ID, "missing"))

	// The current version goes through.
	v3 := mustPutObject(t, s, newObject(env.ID, "contact"), 2, newMigration(`["v3"]`, def.UpdateTime))
	if v3.Version != 3 {
		t.Errorf("version after put with expected 2 = %d, want 3", v3.Version)
	}
}

func testObjectCreateTwice(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	env := newEnvForObjects(t, s, "dev")
	first := mustPutObject(t, s, newObject(env.ID, "contact"), 0, newMigration(`["create"]`, fixtureTime()))
	_, err := s.PutObjectDefinition(ctx, newObject(env.ID, "contact"), 0, newMigration(`["again"]`, fixtureTime()))
	wantErr(t, "PutObjectDefinition(existing, expected 0)", err, controlplane.ErrVersionConflict)
	diff(t, "definition after the second create", first, mustGetObject(t, s, env.ID, "contact"))
	if n := len(mustListMigrations(t, s, env.ID, "contact")); n != 1 {
		t.Errorf("%d migrations after the second create, want 1", n)
	}
}

func testObjectEnvironmentMissing(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	for _, expected := range []int64{0, 1, 7} {
		_, err := s.PutObjectDefinition(ctx, newObject(newID(), "contact"), expected, newMigration(`[]`, fixtureTime()))
		wantErr(t, fmt.Sprintf("PutObjectDefinition(unknown environment, expected %d)", expected), err, controlplane.ErrNotFound)
	}
}

func testListObjectDefinitions(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	env := newEnvForObjects(t, s, "dev")
	// Byte order: upper case before lower case, ASCII before multi-byte.
	names := []string{"b", "Zeta", "a", "é", "a_b", "aa", "B", "z"}
	var want []controlplane.ObjectDefinition
	for _, name := range names {
		want = append(want, mustPutObject(t, s, newObject(env.ID, name), 0, newMigration(`[]`, fixtureTime())))
	}
	slices.SortFunc(want, func(a, b controlplane.ObjectDefinition) int { return strings.Compare(a.Name, b.Name) })

	var got []controlplane.ObjectDefinition
	var sizes []int
	page := controlplane.Page{Limit: 3}
	for range 5 {
		defs, err := s.ListObjectDefinitions(ctx, env.ID, page)
		if err != nil {
			t.Fatalf("ListObjectDefinitions(%+v): %v", page, err)
		}
		sizes = append(sizes, len(defs))
		if len(defs) == 0 {
			break
		}
		got = append(got, defs...)
		page.After = defs[len(defs)-1].Name
	}
	diff(t, "page sizes", []int{3, 3, 2, 0}, sizes)
	diff(t, "paged definitions", want, got)

	all, err := s.ListObjectDefinitions(ctx, env.ID, controlplane.Page{})
	if err != nil {
		t.Fatalf("ListObjectDefinitions(default page): %v", err)
	}
	diff(t, "default page", want, all)

	rest, err := s.ListObjectDefinitions(ctx, env.ID, controlplane.Page{After: want[4].Name, Limit: 100})
	if err != nil {
		t.Fatalf("ListObjectDefinitions(after): %v", err)
	}
	diff(t, "page after the fifth", want[5:], rest)

	none, err := s.ListObjectDefinitions(ctx, newID(), controlplane.Page{})
	if err != nil || len(none) != 0 {
		t.Errorf("ListObjectDefinitions(unknown environment) = %v, %v; want an empty page", none, err)
	}
}

func testObjectIsolation(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	a := newEnvForObjects(t, s, "env-a")
	b := newEnvForObjects(t, s, "env-b")

	defA := mustPutObject(t, s, newObject(a.ID, "contact"), 0, newMigration(`["a1"]`, fixtureTime()))
	// The same name in another environment is a new object, at version 1.
	defB := mustPutObject(t, s, newObject(b.ID, "contact"), 0, newMigration(`["b1"]`, fixtureTime()))
	onlyB := mustPutObject(t, s, newObject(b.ID, "invoice"), 0, newMigration(`["b1"]`, fixtureTime()))
	defB = mustPutObject(t, s, newObject(b.ID, "contact"), defB.Version, newMigration(`["b2"]`, fixtureTime()))

	diff(t, "definition in A", defA, mustGetObject(t, s, a.ID, "contact"))
	diff(t, "definition in B", defB, mustGetObject(t, s, b.ID, "contact"))
	diff(t, "listing of A", []controlplane.ObjectDefinition{defA}, allObjects(t, s, a.ID))
	diff(t, "listing of B", []controlplane.ObjectDefinition{defB, onlyB}, allObjects(t, s, b.ID))
	if n := len(mustListMigrations(t, s, a.ID, "contact")); n != 1 {
		t.Errorf("%d migrations of A's contact, want 1", n)
	}
	if n := len(mustListMigrations(t, s, b.ID, "contact")); n != 2 {
		t.Errorf("%d migrations of B's contact, want 2", n)
	}
	_, err := s.GetObjectDefinition(ctx, a.ID, "invoice")
	wantErr(t, "GetObjectDefinition(B's name in A)", err, controlplane.ErrNotFound)

	// Versions are per environment: A is at 1, B at 2.
	_, err = s.PutObjectDefinition(ctx, newObject(a.ID, "contact"), 2, newMigration(`[]`, fixtureTime()))
	wantErr(t, "PutObjectDefinition(A with B's version)", err, controlplane.ErrVersionConflict)

	// Deleting in one environment leaves the other alone.
	if err := s.DeleteObjectDefinition(ctx, a.ID, "contact"); err != nil {
		t.Fatalf("DeleteObjectDefinition(A): %v", err)
	}
	diff(t, "B's contact after deleting A's", defB, mustGetObject(t, s, b.ID, "contact"))
	if n := len(mustListMigrations(t, s, b.ID, "contact")); n != 2 {
		t.Errorf("%d migrations of B's contact after deleting A's, want 2", n)
	}
	err = s.DeleteObjectDefinition(ctx, a.ID, "invoice")
	wantErr(t, "DeleteObjectDefinition(B's name in A)", err, controlplane.ErrNotFound)
}

func testObjectMigrations(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	env := newEnvForObjects(t, s, "dev")
	start := fixtureTime()
	var want []controlplane.ObjectMigration
	for i := range 4 {
		def := newObject(env.ID, "contact")
		def.UpdateTime = start.Add(time.Duration(i) * time.Minute)
		m := newMigration(fmt.Sprintf(`[{"step":%d}]`, i), start.Add(time.Duration(i)*time.Second))
		// Only Steps and ApplyTime count; the rest is def's.
		m.EnvironmentID, m.Name, m.Version = "other", "other", 99
		if i == 2 {
			m.Steps = nil // no steps: read back as nil
		}
		if i == 3 {
			m.ApplyTime = time.Time{} // defaults to the UpdateTime
		}
		mustPutObject(t, s, def, int64(i), m)
		w := controlplane.ObjectMigration{
			EnvironmentID: env.ID, Name: "contact", Version: int64(i + 1),
			Steps: m.Steps, ApplyTime: m.ApplyTime,
		}
		if i == 3 {
			w.ApplyTime = def.UpdateTime
		}
		want = append(want, w)
	}
	diff(t, "migrations", want, mustListMigrations(t, s, env.ID, "contact"))

	none, err := s.ListObjectMigrations(ctx, env.ID, "unknown")
	if err != nil || len(none) != 0 {
		t.Errorf("ListObjectMigrations(unknown) = %v, %v; want none", none, err)
	}
}

func testDeleteObject(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	env := newEnvForObjects(t, s, "dev")
	mustPutObject(t, s, newObject(env.ID, "contact"), 0, newMigration(`["v1"]`, fixtureTime()))
	mustPutObject(t, s, newObject(env.ID, "contact"), 1, newMigration(`["v2"]`, fixtureTime()))
	keep := mustPutObject(t, s, newObject(env.ID, "keep"), 0, newMigration(`["k1"]`, fixtureTime()))

	if err := s.DeleteObjectDefinition(ctx, env.ID, "contact"); err != nil {
		t.Fatalf("DeleteObjectDefinition: %v", err)
	}
	_, err := s.GetObjectDefinition(ctx, env.ID, "contact")
	wantErr(t, "GetObjectDefinition(deleted)", err, controlplane.ErrNotFound)
	diff(t, "migrations of deleted", []controlplane.ObjectMigration(nil), mustListMigrations(t, s, env.ID, "contact"))
	err = s.DeleteObjectDefinition(ctx, env.ID, "contact")
	wantErr(t, "DeleteObjectDefinition(deleted)", err, controlplane.ErrNotFound)
	err = s.DeleteObjectDefinition(ctx, newID(), "keep")
	wantErr(t, "DeleteObjectDefinition(unknown environment)", err, controlplane.ErrNotFound)
	_, err = s.PutObjectDefinition(ctx, newObject(env.ID, "contact"), 2, newMigration(`[]`, fixtureTime()))
	wantErr(t, "PutObjectDefinition(deleted, expected 2)", err, controlplane.ErrVersionConflict)
	diff(t, "remaining definitions", []controlplane.ObjectDefinition{keep}, allObjects(t, s, env.ID))
	if n := len(mustListMigrations(t, s, env.ID, "keep")); n != 1 {
		t.Errorf("%d migrations of the kept definition, want 1", n)
	}

	// The name is free again, and its history starts over.
	again := mustPutObject(t, s, newObject(env.ID, "contact"), 0, newMigration(`["again"]`, fixtureTime()))
	if again.Version != 1 {
		t.Errorf("version of the recreated definition = %d, want 1", again.Version)
	}
	got := mustListMigrations(t, s, env.ID, "contact")
	if len(got) != 1 || string(got[0].Steps) != `["again"]` {
		t.Errorf("migrations of the recreated definition = %+v, want only its first", got)
	}
}

func testObjectEnvironmentCascade(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")
	gone := mustCreateEnv(t, s, newEnv(org.ID, "gone"), controlplane.DefaultIfFirst)
	keep := mustCreateEnv(t, s, newEnv(org.ID, "keep"), controlplane.DefaultNo)
	for _, name := range []string{"contact", "invoice"} {
		mustPutObject(t, s, newObject(gone.ID, name), 0, newMigration(`["v1"]`, fixtureTime()))
		mustPutObject(t, s, newObject(gone.ID, name), 1, newMigration(`["v2"]`, fixtureTime()))
	}
	kept := mustPutObject(t, s, newObject(keep.ID, "contact"), 0, newMigration(`["v1"]`, fixtureTime()))

	if err := s.DeleteEnvironment(ctx, gone.ID); err != nil {
		t.Fatalf("DeleteEnvironment: %v", err)
	}
	for _, name := range []string{"contact", "invoice"} {
		_, err := s.GetObjectDefinition(ctx, gone.ID, name)
		wantErr(t, "GetObjectDefinition(deleted environment)", err, controlplane.ErrNotFound)
		diff(t, "migrations in the deleted environment", []controlplane.ObjectMigration(nil),
			mustListMigrations(t, s, gone.ID, name))
	}
	diff(t, "definitions of the deleted environment", []controlplane.ObjectDefinition(nil), allObjects(t, s, gone.ID))
	_, err := s.PutObjectDefinition(ctx, newObject(gone.ID, "contact"), 0, newMigration(`[]`, fixtureTime()))
	wantErr(t, "PutObjectDefinition(deleted environment)", err, controlplane.ErrNotFound)

	diff(t, "definitions of the other environment", []controlplane.ObjectDefinition{kept}, allObjects(t, s, keep.ID))
	if n := len(mustListMigrations(t, s, keep.ID, "contact")); n != 1 {
		t.Errorf("%d migrations in the other environment, want 1", n)
	}
}

// raceObjectPut runs objectRacers puts of one object at once, each with its
// own definition and expected version, and returns their results.
func raceObjectPut(s controlplane.Store, t *testing.T, envID string, expected int64) ([]controlplane.ObjectDefinition, []error) {
	defs := make([]controlplane.ObjectDefinition, objectRacers)
	errs := make([]error, objectRacers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range objectRacers {
		wg.Go(func() {
			<-start
			defs[i], errs[i] = s.PutObjectDefinition(t.Context(), newObject(envID, "contact"), expected,
				newMigration(fmt.Sprintf(`["racer %d"]`, i), fixtureTime()))
		})
	}
	close(start)
	wg.Wait()
	return defs, errs
}

// wantObjectWinner checks that exactly one racer won, that the others got
// ErrVersionConflict, and that the store holds the winner's definition at
// version want with one migration per version, the last the winner's.
func wantObjectWinner(t *testing.T, s controlplane.Store, envID string, defs []controlplane.ObjectDefinition, errs []error, want int64) {
	t.Helper()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Errorf("racers %d and %d both succeeded", winner, i)
			}
			winner = i
		case !errors.Is(err, controlplane.ErrVersionConflict):
			t.Errorf("racer %d: error %v, want nil or %v", i, err, controlplane.ErrVersionConflict)
		}
	}
	if winner < 0 {
		t.Fatalf("no racer succeeded")
	}
	if defs[winner].Version != want {
		t.Errorf("winner's version = %d, want %d", defs[winner].Version, want)
	}
	diff(t, "stored definition", defs[winner], mustGetObject(t, s, envID, "contact"))
	history := mustListMigrations(t, s, envID, "contact")
	if int64(len(history)) != want {
		t.Fatalf("%d migrations, want %d", len(history), want)
	}
	if got, w := string(history[want-1].Steps), fmt.Sprintf(`["racer %d"]`, winner); got != w {
		t.Errorf("last migration steps = %s, want the winner's %s", got, w)
	}
}

func testRaceObjectCreate(t *testing.T, s controlplane.Store) {
	env := newEnvForObjects(t, s, "dev")
	defs, errs := raceObjectPut(s, t, env.ID, 0)
	wantObjectWinner(t, s, env.ID, defs, errs, 1)
}

func testRaceObjectUpdate(t *testing.T, s controlplane.Store) {
	env := newEnvForObjects(t, s, "dev")
	mustPutObject(t, s, newObject(env.ID, "contact"), 0, newMigration(`["racer -1"]`, fixtureTime()))
	defs, errs := raceObjectPut(s, t, env.ID, 1)
	wantObjectWinner(t, s, env.ID, defs, errs, 2)
}

// testObjectDeleteIf deletes a definition only while it is the one read:
// not a later version, not a re-created object of the same version.
func testObjectDeleteIf(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	env := newEnvForObjects(t, s, "dev")
	v1 := mustPutObject(t, s, newObject(env.ID, "contact"), 0, newMigration(`[]`, fixtureTime()))
	v2 := mustPutObject(t, s, newObject(env.ID, "contact"), 1, newMigration(`[]`, fixtureTime()))
	err := s.DeleteObjectDefinitionIf(ctx, env.ID, "contact", v1.Version, v1.CreateTime)
	wantErr(t, "DeleteObjectDefinitionIf(an older version)", err, controlplane.ErrVersionConflict)
	if err := s.DeleteObjectDefinitionIf(ctx, env.ID, "contact", v2.Version, v2.CreateTime); err != nil {
		t.Fatalf("DeleteObjectDefinitionIf(the version read): %v", err)
	}
	_, err = s.GetObjectDefinition(ctx, env.ID, "contact")
	wantErr(t, "GetObjectDefinition after the delete", err, controlplane.ErrNotFound)
	err = s.DeleteObjectDefinitionIf(ctx, env.ID, "contact", v2.Version, v2.CreateTime)
	wantErr(t, "DeleteObjectDefinitionIf(a deleted one)", err, controlplane.ErrNotFound)

	// Re-created at version 1, later: the old incarnation's delete misses it.
	again := newObject(env.ID, "contact")
	again.CreateTime = v1.CreateTime.Add(time.Second)
	again.UpdateTime = again.CreateTime
	re := mustPutObject(t, s, again, 0, newMigration(`[]`, fixtureTime()))
	err = s.DeleteObjectDefinitionIf(ctx, env.ID, "contact", v1.Version, v1.CreateTime)
	wantErr(t, "DeleteObjectDefinitionIf(the old incarnation)", err, controlplane.ErrVersionConflict)
	diff(t, "the re-created definition", re, mustGetObject(t, s, env.ID, "contact"))
}
