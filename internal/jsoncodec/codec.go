package jsoncodec

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/envplane/envplane/internal/apierr"
)

// Marshal appends msg's JSON to b: AppendMessage's when it can, protojson's
// otherwise.
func Marshal(b []byte, msg proto.Message) ([]byte, error) {
	if out, ok := AppendMessage(b, msg.ProtoReflect()); ok {
		return out, nil
	}
	return protojson.MarshalOptions{}.MarshalAppend(b, msg)
}

// ConnectCodecs are the JSON codecs of connect handlers, to be passed with
// connect.WithCodec: Connect names JSON twice ("json" and "json;
// charset=utf-8"), and both replace its protojson codecs.
func ConnectCodecs() []connect.Codec {
	return []connect.Codec{connectCodec{name: "json"}, connectCodec{name: "json; charset=utf-8"}}
}

// connectCodec is connect's protoJSONCodec with Marshal's fast path.
type connectCodec struct{ name string }

func (c connectCodec) Name() string { return c.name }
func (connectCodec) IsBinary() bool { return false }

func (c connectCodec) Marshal(msg any) ([]byte, error) { return c.MarshalAppend(nil, msg) }

func (connectCodec) MarshalAppend(b []byte, msg any) ([]byte, error) {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("jsoncodec: %T is not a protobuf message", msg)
	}
	return Marshal(b, m)
}

// MarshalStable is Marshal: its output has no whitespace and sorted Struct
// keys, so equal messages give equal bytes (Connect GET caching wants that).
func (c connectCodec) MarshalStable(msg any) ([]byte, error) { return c.Marshal(msg) }

func (connectCodec) Unmarshal(data []byte, msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return fmt.Errorf("jsoncodec: %T is not a protobuf message", msg)
	}
	if len(data) == 0 {
		return errors.New("zero-length payload is not a valid JSON object")
	}
	// Unknown fields are dropped, as by connect's own JSON codec, so clients
	// and servers need not share one version of the schema.
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, m); err != nil {
		return fmt.Errorf("unmarshal into %T: %w", msg, err)
	}
	return nil
}

// VanguardCodec is the JSON codec of the REST transcoder, to be passed with
// vanguard.WithCodec: vanguard's own (which emits unpopulated fields), whose
// answers take AppendMessageEmitUnpopulated's fast path. Unlike vanguard's,
// it refuses a body naming a field the method does not have, as the
// transcoder refuses such a query parameter: over REST a misspelt field
// ("drvier") would otherwise be dropped without a word, and the call would
// do something else than asked. (Connect's JSON keeps dropping them, the
// protobuf convention between versions of a generated client.)
func VanguardCodec(res vanguard.TypeResolver) vanguard.Codec {
	c := vanguard.NewJSONCodec(res)
	c.UnmarshalOptions.DiscardUnknown = false
	return vanguardCodec{c}
}

type vanguardCodec struct{ *vanguard.JSONCodec }

var _ vanguard.RESTCodec = vanguardCodec{}

func (c vanguardCodec) MarshalAppend(b []byte, msg proto.Message) ([]byte, error) {
	if out, ok := AppendMessageEmitUnpopulated(b, msg.ProtoReflect()); ok {
		return out, nil
	}
	return c.JSONCodec.MarshalAppend(b, msg)
}

// Unmarshal reads a REST body. A body that is not the method's message is
// the caller's mistake: INVALID_ARGUMENT with a reason (vanguard would
// answer 500 UNKNOWN).
func (c vanguardCodec) Unmarshal(b []byte, msg proto.Message) error {
	// A record (the body of a create or an update) takes the fast path
	// when it can; protojson reads the rest, and says what is wrong.
	if s, ok := msg.(*structpb.Struct); ok && len(s.GetFields()) == 0 {
		if UnmarshalStruct(b, s) {
			return nil
		}
		proto.Reset(s)
	}
	if err := c.JSONCodec.Unmarshal(b, msg); err != nil {
		return apierr.InvalidArgument(apierr.ReasonMalformedBody, "the request body does not fit the method: "+err.Error())
	}
	return nil
}

// MarshalAppendField writes one field of msg, the whole answer of a REST
// method with a response_body (a record, say).
func (c vanguardCodec) MarshalAppendField(b []byte, msg proto.Message, field protoreflect.FieldDescriptor) ([]byte, error) {
	if field.Message() != nil && !field.IsList() && !field.IsMap() {
		return c.MarshalAppend(b, msg.ProtoReflect().Get(field).Message().Interface())
	}
	return c.JSONCodec.MarshalAppendField(b, msg, field)
}
