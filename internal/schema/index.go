package schema

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Suffixes of the indexes a field asks for with Unique or Indexed. Validate
// keeps explicit index names off these derived names.
const (
	uniqueIndexSuffix = "_key"
	plainIndexSuffix  = "_idx"
)

// maxIdentifier is PostgreSQL's identifier limit in bytes (NAMEDATALEN-1);
// longer names are silently truncated there, so two long names could clash.
const maxIdentifier = 63

// FieldIndex returns the single-field index f asks for: a unique index
// "<name>_key" when f is unique (which also serves lookups, so Indexed adds
// nothing), else "<name>_idx" when f is indexed. Engines and Plan treat
// these exactly like explicit indexes, so toggling Unique or Indexed is an
// index step.
func FieldIndex(f Field) (Index, bool) {
	switch {
	case f.Unique:
		return Index{Name: f.Name + uniqueIndexSuffix, Fields: []string{f.Name}, Unique: true}, true
	case f.Indexed:
		return Index{Name: f.Name + plainIndexSuffix, Fields: []string{f.Name}}, true
	}
	return Index{}, false
}

// AllIndexes returns every index o's table has: the field-derived ones in
// field order, then the explicit ones. It is the one list Plan diffs and
// create_table follows, so derived and explicit indexes cannot drift apart.
func (o *Object) AllIndexes() []Index {
	var out []Index
	for _, f := range o.Fields {
		if idx, ok := FieldIndex(f); ok {
			out = append(out, idx)
		}
	}
	for _, idx := range o.Indexes {
		out = append(out, cloneIndex(idx))
	}
	return out
}

// IndexName returns the physical name of idx on object's table; see
// PhysicalIndexName.
func IndexName(object string, idx Index) string {
	return PhysicalIndexName(object, idx.Name)
}

// PhysicalIndexName returns the database name of index on object's table.
// PostgreSQL scopes index names to the schema, not the table, so the name
// carries the object; it is at most 63 bytes (PostgreSQL's limit), uses
// only [a-z0-9_], and ends with a hash of (object, index) so that two pairs
// never share a name even when the readable part is truncated or ambiguous
// ("a_b"+"c" and "a"+"b_c"). The same pair always gets the same name, which
// lets an engine find the index it made earlier and map a constraint error
// back to the index.
func PhysicalIndexName(object, index string) string {
	sum := sha256.Sum256([]byte(object + "\x00" + index))
	suffix := "_" + hex.EncodeToString(sum[:4])
	readable := sanitize(object) + "__" + sanitize(index)
	if limit := maxIdentifier - len(suffix); len(readable) > limit {
		readable = readable[:limit]
	}
	return readable + suffix
}

// sanitize maps anything outside [a-z0-9_] to '_'; validated names pass
// unchanged, and the hash suffix keeps mapped names distinct.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

func cloneIndex(idx Index) Index {
	idx.Fields = append([]string(nil), idx.Fields...)
	return idx
}
