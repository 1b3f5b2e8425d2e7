package jsoncodec

import (
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// sameAsProtojson fails unless data, read by UnmarshalStruct, is what
// protojson reads; it reports whether UnmarshalStruct took it.
func sameAsProtojson(t *testing.T, data []byte) bool {
	t.Helper()
	var fast structpb.Struct
	if !UnmarshalStruct(data, &fast) {
		return false
	}
	var slow structpb.Struct
	if err := protojson.Unmarshal(data, &slow); err != nil {
		t.Fatalf("UnmarshalStruct took %q, which protojson refuses: %v", data, err)
	}
	if !proto.Equal(&fast, &slow) {
		t.Fatalf("%q: UnmarshalStruct read %v, protojson %v", data, &fast, &slow)
	}
	return true
}

// bodies are records as clients send them, and what they get wrong.
var bodies = []struct {
	json string
	fast bool // taken by UnmarshalStruct (else left to protojson)
}{
	{`{}`, true},
	{` { "name" : "Alice" , "n" : 7 , "tag" : "red" } `, true},
	{`{"a":null,"b":true,"c":false,"d":-0,"e":1.5e-7,"f":1E+21,"g":9007199254740993}`, true},
	{`{"nested":{"list":[1,"two",[3],{"four":4},null,[]],"empty":{}}}`, true},
	{`{"s":"q\"uote back\\slash \/ \b\f\n\r\t \u00e9 \u4e2d \ud83d\ude42 \u0000"}`, true},
	{`{"raw":"é中🙂"}`, true},
	{`{"esc\u0061pe":"key"}`, true},
	{"\t\r\n{\"ws\":[ 1 , 2 ]}\n", true},
	{`{"a":1,"a":2}`, false},         // a duplicate key
	{`{"n":1e999}`, false},           // beyond float64
	{`{"n":01}`, false},              // a leading zero
	{`{"n":+1}`, false},              // a sign JSON lacks
	{`{"n":.5}`, false},              // no integer part
	{`{"n":1.}`, false},              // no fraction
	{`{"n":1e}`, false},              // no exponent
	{`{"n":NaN}`, false},             // not JSON
	{`{"b":tru}`, false},             // a broken literal
	{`{"b":truex}`, false},           // a literal run on
	{`{"s":"\ud83d"}`, false},        // a lone surrogate
	{`{"s":"\x"}`, false},            // no such escape
	{"{\"s\":\"tab\there\"}", false}, // a raw control character
	{"{\"s\":\"\xff\"}", false},      // invalid UTF-8
	{`{"a":1,}`, false},              // a trailing comma
	{`{"a":1} {}`, false},            // two values
	{`[1]`, false},                   // not an object
	{`null`, false},                  // not an object
	{`{"a":1`, false},                // cut short
	{`{"a" 1}`, false},               // no colon
	{`{a:1}`, false},                 // an unquoted key
	{strings.Repeat(`{"a":`, 70) + `1` + strings.Repeat(`}`, 70), false}, // deeper than maxDepth
}

func TestUnmarshalStruct(t *testing.T) {
	for _, b := range bodies {
		if got := sameAsProtojson(t, []byte(b.json)); got != b.fast {
			t.Errorf("UnmarshalStruct(%q) took it: %v, want %v", b.json, got, b.fast)
		}
	}
}

// TestUnmarshalStructReadsWhatIsWritten: every record protojson and
// AppendMessage write, the fast decoder reads, as protojson does.
func TestUnmarshalStructReadsWhatIsWritten(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for range 500 {
		s := randomStruct(r, 4)
		written, err := protojson.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		ours, ok := AppendMessage(nil, s.ProtoReflect())
		if !ok {
			t.Fatalf("AppendMessage refused %v", s)
		}
		for _, data := range [][]byte{written, ours} {
			if !sameAsProtojson(t, data) {
				t.Fatalf("UnmarshalStruct refused %q", data)
			}
		}
	}
}

// FuzzUnmarshalStruct: whatever the bytes, UnmarshalStruct refuses them or
// reads what protojson reads.
func FuzzUnmarshalStruct(f *testing.F) {
	for _, b := range bodies {
		f.Add([]byte(b.json))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sameAsProtojson(t, data)
	})
}
