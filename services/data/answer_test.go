package data

import (
	"bytes"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/jsoncodec"
	"github.com/envplane/envplane/internal/objects"
	"github.com/envplane/envplane/internal/schema"
)

// transcoded is what the REST transcoder writes for msg: its codec's bytes.
func transcoded(t testing.TB, msg proto.Message) []byte {
	t.Helper()
	b, err := jsoncodec.VanguardCodec(protoregistry.GlobalTypes).MarshalAppend(nil, msg)
	if err != nil {
		t.Fatalf("transcoder's codec: %v", err)
	}
	return b
}

// sameJSON requires got to be want's bytes.
func sameJSON(t testing.TB, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("REST answer differs from the transcoder's:\n got %s\nwant %s", got, want)
	}
}

// A record's REST answer, written from the stored values, is the
// transcoder's answer for the Struct the RPC protocols carry, byte for byte.
func TestShownWritesWhatTheTranscoderWrites(t *testing.T) {
	for _, mask := range []map[string]bool{nil, {"age": true, "doc": true}, {}} {
		for i := range 12 {
			r := &shown{obj: contact, rec: stored(i), mask: mask}
			got, err := r.AppendJSON([]byte("prefix"))
			if err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
			if !bytes.HasPrefix(got, []byte("prefix")) {
				t.Fatalf("record %d: AppendJSON did not append: %s", i, got)
			}
			sameJSON(t, got[len("prefix"):], transcoded(t, r.proto()))
		}
	}
}

func TestPageWritesWhatTheTranscoderWrites(t *testing.T) {
	var recs []driver.Record
	for i := range 9 {
		recs = append(recs, stored(i))
	}
	for _, p := range []*page{
		{obj: contact},
		{obj: contact, recs: recs[:1]},
		{obj: contact, recs: recs, next: "tok-\"en\u2028", total: 1 << 40},
		{obj: contact, recs: recs, mask: map[string]bool{}, total: 3},
		{obj: contact, recs: recs, mask: map[string]bool{"vip": true}, next: "x"},
	} {
		got, err := p.AppendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		sameJSON(t, got, transcoded(t, p.proto()))
	}
}

// Every kind of stored value, at random, including what JSON cannot carry
// exactly (integers beyond 2^53, which become strings), text that is not
// UTF-8 (null, as structpb has it) and control characters.
func TestShownMatchesAtRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 2026))
	for i := range 3000 {
		rec := randomStored(rng)
		r := &shown{obj: contact, rec: rec}
		got, err := r.AppendJSON(nil)
		want, werr := jsoncodec.VanguardCodec(protoregistry.GlobalTypes).MarshalAppend(nil, r.proto())
		if (err != nil) != (werr != nil) {
			t.Fatalf("case %d %v: error %v, transcoder's %v", i, rec, err, werr)
		}
		if err == nil {
			sameJSON(t, got, want)
		}
	}
}

func randomStored(rng *rand.Rand) driver.Record {
	text := func() string {
		const alphabet = "aZ09 \"\\/\n\t\x00\x1f\x7f<>&é€\U0001F600\u2028"
		var b strings.Builder
		for range rng.IntN(8) {
			if rng.IntN(20) == 0 {
				b.WriteByte(0xff) // not UTF-8
				continue
			}
			r := []rune(alphabet)
			b.WriteRune(r[rng.IntN(len(r))])
		}
		return b.String()
	}
	number := func() float64 {
		switch rng.IntN(6) {
		case 0:
			return math.Float64frombits(rng.Uint64()) // anything, NaN and ±Inf included
		case 1:
			return float64(rng.Int64N(1<<60)) * math.Pow(10, float64(rng.IntN(40)-20))
		default:
			return rng.NormFloat64() * math.Pow(10, float64(rng.IntN(30)-15))
		}
	}
	rec := driver.Record{schema.FieldID: text()}
	at := time.Unix(rng.Int64N(1<<36)-1<<35, rng.Int64N(1e9)).Truncate(time.Microsecond)
	if rng.IntN(2) == 0 {
		at = at.In(time.FixedZone("x", 3600*(rng.IntN(25)-12)))
	}
	rec[schema.FieldCreatedAt], rec[schema.FieldUpdatedAt], rec[schema.FieldETag] = at, at, text()
	put := func(name string, v any) {
		if rng.IntN(5) > 0 {
			rec[name] = v
		}
	}
	put("name", text())
	switch rng.IntN(3) {
	case 0:
		put("age", rng.Int64())
	case 1:
		put("age", -rng.Int64N(objects.MaxSafeInteger+2))
	default:
		put("age", rng.Int64N(1000))
	}
	put("score", number())
	put("vip", rng.IntN(2) == 0)
	put("seen", at.Add(time.Duration(rng.Int64())))
	put("doc", map[string]any{text(): []any{text(), number(), nil, true, map[string]any{}}, "n": number()})
	return rec
}

// FuzzShown holds a record's REST answer to the transcoder's for any text
// and numbers.
func FuzzShown(f *testing.F) {
	f.Add("Alice", "key", int64(42), 1.5, true)
	f.Add("bad \xff", "\x00", int64(math.MaxInt64), math.Inf(1), false)
	f.Add("\u2028\"\\", "é", int64(-objects.MaxSafeInteger-1), 1e-7, true)
	codec := jsoncodec.VanguardCodec(protoregistry.GlobalTypes)
	f.Fuzz(func(t *testing.T, s, key string, n int64, x float64, b bool) {
		at := time.UnixMicro(n % (1 << 50)).UTC()
		rec := driver.Record{
			schema.FieldID: s, schema.FieldCreatedAt: at, schema.FieldUpdatedAt: at, schema.FieldETag: key,
			"name": s, "age": n, "score": x, "vip": b, "seen": at,
			"doc": map[string]any{key: []any{s, x, b}},
		}
		r := &shown{obj: contact, rec: rec}
		got, err := r.AppendJSON(nil)
		want, werr := codec.MarshalAppend(nil, r.proto())
		if (err != nil) != (werr != nil) {
			t.Fatalf("error %v, transcoder's %v", err, werr)
		}
		if err == nil {
			sameJSON(t, got, want)
		}
	})
}

func BenchmarkShownPage(b *testing.B) {
	recs := make([]driver.Record, 20)
	for i := range recs {
		recs[i] = stored(i * 4) // no NULLs, no oddities
	}
	p := &page{obj: contact, recs: recs, next: "token"}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = p.AppendJSON(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStructPage(b *testing.B) {
	recs := make([]driver.Record, 20)
	for i := range recs {
		recs[i] = stored(i * 4)
	}
	p := &page{obj: contact, recs: recs, next: "token"}
	codec := jsoncodec.VanguardCodec(protoregistry.GlobalTypes)
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = codec.MarshalAppend(buf[:0], p.proto()); err != nil {
			b.Fatal(err)
		}
	}
}
