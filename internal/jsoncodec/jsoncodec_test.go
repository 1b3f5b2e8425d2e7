package jsoncodec

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
)

// same fails t unless fast, AppendMessage's output, means what protojson
// writes for m: the same JSON value, numbers compared as written.
func same(t testing.TB, m proto.Message, emitUnpopulated bool) {
	t.Helper()
	fast, ok := encoder{emitUnpopulated: emitUnpopulated}.appendMessage([]byte("prefix"), m.ProtoReflect())
	if !ok {
		t.Fatalf("AppendMessage refused %v", m)
	}
	if !bytes.HasPrefix(fast, []byte("prefix")) {
		t.Fatalf("AppendMessage lost what it appended to: %q", fast)
	}
	want, err := protojson.MarshalOptions{EmitUnpopulated: emitUnpopulated}.Marshal(m)
	if err != nil {
		t.Fatalf("protojson: %v", err)
	}
	if g, w := decode(t, fast[len("prefix"):]), decode(t, want); !reflect.DeepEqual(g, w) {
		t.Fatalf("AppendMessage wrote\n%s\nprotojson\n%s", fast[len("prefix"):], want)
	}
}

func decode(t testing.TB, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("invalid JSON %q: %v", b, err)
	}
	return v
}

// tricky strings: escapes, multi-byte runes, what encoding/json would escape
// and protojson does not.
var tricky = []string{"", "plain", `q"uote`, `back\slash`, "tab\tnew\nline\r", "\x00\x01\x1f\x7f", "<&>", "é中🙂", "\u2028\u2029", strings.Repeat("long ", 40)}

var numbers = []float64{0, math.Copysign(0, -1), 1, -1, 42, 1.5, 1e-7, 1e-6, 1e20, 1e21, 123456789012345678, 9007199254740991, math.MaxFloat64, math.SmallestNonzeroFloat64, 0.1, 1.0 / 3}

func randomValue(r *rand.Rand, depth int) *structpb.Value {
	switch n := r.IntN(7); {
	case n == 0:
		return structpb.NewNullValue()
	case n == 1:
		return structpb.NewBoolValue(r.IntN(2) == 0)
	case n == 2:
		return structpb.NewNumberValue(numbers[r.IntN(len(numbers))])
	case n == 3:
		return structpb.NewNumberValue(r.NormFloat64() * math.Pow(10, float64(r.IntN(40)-20)))
	case n == 4 && depth > 0:
		return structpb.NewStructValue(randomStruct(r, depth-1))
	case n == 5 && depth > 0:
		l := &structpb.ListValue{}
		for range r.IntN(4) {
			l.Values = append(l.Values, randomValue(r, depth-1))
		}
		return structpb.NewListValue(l)
	default:
		return structpb.NewStringValue(tricky[r.IntN(len(tricky))])
	}
}

func randomStruct(r *rand.Rand, depth int) *structpb.Struct {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for range r.IntN(12) {
		s.Fields[tricky[r.IntN(len(tricky))]+string(rune('a'+r.IntN(26)))] = randomValue(r, depth)
	}
	return s
}

func TestRecordsAsProtojson(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		page := &datav1.ListRecordsResponse{}
		for range r.IntN(5) {
			page.Records = append(page.Records, randomStruct(r, 3))
		}
		if i%2 == 0 {
			page.NextPageToken = tricky[r.IntN(len(tricky))]
			page.TotalSize = r.Int64()
		}
		for _, emit := range []bool{false, true} {
			same(t, page, emit)
			if len(page.Records) > 0 {
				same(t, &datav1.GetRecordResponse{Record: page.Records[0]}, emit)
				same(t, page.Records[0], emit)
			}
			same(t, &datav1.BatchWriteRecordsResponse{Results: []*datav1.RecordWriteResult{{Record: randomStruct(r, 2)}, {}}}, emit)
		}
	}
}

func TestStructKeysAreSorted(t *testing.T) {
	s, err := structpb.NewStruct(map[string]any{"b": 1, "a": 2, "é": 3, "Z": 4, "": 5})
	if err != nil {
		t.Fatal(err)
	}
	got, ok := AppendMessage(nil, s.ProtoReflect())
	if !ok {
		t.Fatal("refused")
	}
	if want := `{"":5,"Z":4,"a":2,"b":1,"é":3}`; string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// TestRefusesWhatOnlyProtojsonWrites: these go to protojson, which writes
// them or gives its own error.
func TestRefusesWhatOnlyProtojsonWrites(t *testing.T) {
	for name, m := range map[string]proto.Message{
		"NaN in a Value":       structpb.NewNumberValue(math.NaN()),
		"Infinity in a record": &datav1.GetRecordResponse{Record: &structpb.Struct{Fields: map[string]*structpb.Value{"x": structpb.NewNumberValue(math.Inf(1))}}},
		"Value of no kind":     &structpb.Struct{Fields: map[string]*structpb.Value{"x": {}}},
		"invalid UTF-8 key":    &structpb.Struct{Fields: map[string]*structpb.Value{"\xff": structpb.NewNullValue()}},
		"invalid UTF-8 value":  &structpb.Struct{Fields: map[string]*structpb.Value{"x": structpb.NewStringValue("\xff")}},
		"a Timestamp":          &environmentv1.Organization{Slug: "acme", CreateTime: timestamppb.Now()},
	} {
		if _, ok := AppendMessage(nil, m.ProtoReflect()); ok {
			t.Errorf("%s: AppendMessage wrote it", name)
		}
		out, err := Marshal([]byte("keep"), m)
		want, wantErr := protojson.Marshal(m)
		if (err != nil) != (wantErr != nil) {
			t.Errorf("%s: Marshal error %v, protojson's %v", name, err, wantErr)
		}
		if err == nil && !reflect.DeepEqual(decode(t, out[len("keep"):]), decode(t, want)) {
			t.Errorf("%s: Marshal wrote %s, protojson %s", name, out, want)
		}
	}
}

// kinds is a proto3 message with a field of every kind AppendMessage
// writes, built at run time so the test needs no generated code of its own.
func kinds(t testing.TB) protoreflect.MessageDescriptor {
	t.Helper()
	f := func(name string, n int32, typ descriptorpb.FieldDescriptorProto_Type, label descriptorpb.FieldDescriptorProto_Label) *descriptorpb.FieldDescriptorProto {
		return &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(n), Type: typ.Enum(), Label: label.Enum()}
	}
	opt, rep := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL, descriptorpb.FieldDescriptorProto_LABEL_REPEATED
	fields := []*descriptorpb.FieldDescriptorProto{
		f("b", 1, descriptorpb.FieldDescriptorProto_TYPE_BOOL, opt),
		f("s", 2, descriptorpb.FieldDescriptorProto_TYPE_STRING, opt),
		f("i32", 3, descriptorpb.FieldDescriptorProto_TYPE_INT32, opt),
		f("si32", 4, descriptorpb.FieldDescriptorProto_TYPE_SINT32, opt),
		f("sf32", 5, descriptorpb.FieldDescriptorProto_TYPE_SFIXED32, opt),
		f("u32", 6, descriptorpb.FieldDescriptorProto_TYPE_UINT32, opt),
		f("f32", 7, descriptorpb.FieldDescriptorProto_TYPE_FIXED32, opt),
		f("i64", 8, descriptorpb.FieldDescriptorProto_TYPE_INT64, opt),
		f("si64", 9, descriptorpb.FieldDescriptorProto_TYPE_SINT64, opt),
		f("sf64", 10, descriptorpb.FieldDescriptorProto_TYPE_SFIXED64, opt),
		f("u64", 11, descriptorpb.FieldDescriptorProto_TYPE_UINT64, opt),
		f("fx64", 12, descriptorpb.FieldDescriptorProto_TYPE_FIXED64, opt),
		f("fl", 13, descriptorpb.FieldDescriptorProto_TYPE_FLOAT, opt),
		f("db", 14, descriptorpb.FieldDescriptorProto_TYPE_DOUBLE, opt),
		f("by", 15, descriptorpb.FieldDescriptorProto_TYPE_BYTES, opt),
		f("en", 16, descriptorpb.FieldDescriptorProto_TYPE_ENUM, opt),
		f("child", 17, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, opt),
		f("children", 18, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, rep),
		f("strings", 19, descriptorpb.FieldDescriptorProto_TYPE_STRING, rep),
		f("doubles", 20, descriptorpb.FieldDescriptorProto_TYPE_DOUBLE, rep),
		f("maybe", 21, descriptorpb.FieldDescriptorProto_TYPE_STRING, opt),
		f("one_a", 22, descriptorpb.FieldDescriptorProto_TYPE_STRING, opt),
		f("one_b", 23, descriptorpb.FieldDescriptorProto_TYPE_INT64, opt),
		f("nothing", 24, descriptorpb.FieldDescriptorProto_TYPE_ENUM, opt),
	}
	fields[15].TypeName = proto.String(".kinds.Color")
	fields[16].TypeName = proto.String(".kinds.Kinds")
	fields[17].TypeName = proto.String(".kinds.Kinds")
	fields[20].Proto3Optional = proto.Bool(true)
	fields[20].OneofIndex = proto.Int32(1)
	fields[21].OneofIndex = proto.Int32(0)
	fields[22].OneofIndex = proto.Int32(0)
	fields[23].TypeName = proto.String(".google.protobuf.NullValue")
	file := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("kinds.proto"),
		Package:    proto.String("kinds"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"google/protobuf/struct.proto"},
		EnumType: []*descriptorpb.EnumDescriptorProto{{Name: proto.String("Color"), Value: []*descriptorpb.EnumValueDescriptorProto{
			{Name: proto.String("COLOR_UNSPECIFIED"), Number: proto.Int32(0)},
			{Name: proto.String("COLOR_RED"), Number: proto.Int32(1)},
		}}},
		MessageType: []*descriptorpb.DescriptorProto{{
			Name:      proto.String("Kinds"),
			Field:     fields,
			OneofDecl: []*descriptorpb.OneofDescriptorProto{{Name: proto.String("one")}, {Name: proto.String("_maybe")}},
		}},
	}
	fd, err := protodesc.NewFile(file, protoregistryFiles())
	if err != nil {
		t.Fatalf("descriptor: %v", err)
	}
	return fd.Messages().Get(0)
}

func randomKinds(r *rand.Rand, md protoreflect.MessageDescriptor, depth int) *dynamicpb.Message {
	m := dynamicpb.NewMessage(md)
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if r.IntN(3) == 0 {
			continue // unset
		}
		switch {
		case fd.Message() != nil && fd.IsList():
			if depth > 0 {
				l := m.Mutable(fd).List()
				for range r.IntN(3) {
					l.Append(protoreflect.ValueOfMessage(randomKinds(r, md, depth-1)))
				}
			}
		case fd.Message() != nil:
			if depth > 0 {
				m.Set(fd, protoreflect.ValueOfMessage(randomKinds(r, md, depth-1)))
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range r.IntN(4) {
				l.Append(randomScalar(r, fd))
			}
		default:
			m.Set(fd, randomScalar(r, fd))
		}
	}
	return m
}

func randomScalar(r *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	zero := r.IntN(4) == 0 // zero values matter: implicit presence drops them
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(!zero)
	case protoreflect.StringKind:
		if zero {
			return protoreflect.ValueOfString("")
		}
		return protoreflect.ValueOfString(tricky[r.IntN(len(tricky))])
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(r.Uint32()) * int32(r.IntN(2)))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(r.Uint32() * uint32(r.IntN(2)))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(r.Uint64()) * int64(r.IntN(2)))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(r.Uint64() * uint64(r.IntN(2)))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(numbers[r.IntN(len(numbers))]))
	case protoreflect.DoubleKind:
		special := []float64{math.NaN(), math.Inf(1), math.Inf(-1)}
		if r.IntN(5) == 0 {
			return protoreflect.ValueOfFloat64(special[r.IntN(3)])
		}
		return protoreflect.ValueOfFloat64(numbers[r.IntN(len(numbers))])
	case protoreflect.BytesKind:
		b := make([]byte, r.IntN(9))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return protoreflect.ValueOfBytes(b)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(r.IntN(3))) // 2 has no name
	}
	panic(fd.Kind())
}

func TestEveryKindAsProtojson(t *testing.T) {
	md := kinds(t)
	r := rand.New(rand.NewPCG(3, 4))
	for range 1000 {
		m := randomKinds(r, md, 2)
		same(t, m, false)
		same(t, m, true)
	}
}

func protoregistryFiles() *protoregistry.Files { return protoregistry.GlobalFiles }

// FuzzAppendMessage: whatever a page of records or a message of every kind
// holds (decoded from the fuzzer's bytes), AppendMessage either refuses it
// or writes what protojson writes.
func FuzzAppendMessage(f *testing.F) {
	md := kinds(f)
	r := rand.New(rand.NewPCG(5, 6))
	for range 8 {
		page := &datav1.ListRecordsResponse{Records: []*structpb.Struct{randomStruct(r, 2)}, NextPageToken: "t", TotalSize: 3}
		b, _ := proto.Marshal(page)
		f.Add(b)
		b, _ = proto.Marshal(randomKinds(r, md, 2))
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range []proto.Message{&datav1.ListRecordsResponse{}, dynamicpb.NewMessage(md)} {
			if proto.Unmarshal(b, m) != nil {
				continue
			}
			for _, emit := range []bool{false, true} {
				if _, ok := (encoder{emitUnpopulated: emit}).appendMessage(nil, m.ProtoReflect()); ok {
					same(t, m, emit)
				}
			}
		}
	})
}
