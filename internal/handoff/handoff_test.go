package handoff

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/structpb"

	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
)

func page(n int) *datav1.ListRecordsResponse {
	resp := &datav1.ListRecordsResponse{NextPageToken: "next", TotalSize: int64(n)}
	for i := range n {
		rec, _ := structpb.NewStruct(map[string]any{"id": fmt.Sprint(i), "name": "item", "n": float64(i), "ok": i%2 == 0})
		resp.Records = append(resp.Records, rec)
	}
	return resp
}

func TestHandsMessagesOverBothWays(t *testing.T) {
	t.Parallel()
	m := New()
	// vanguard → handler, as a request travels.
	req := &datav1.GetRecordRequest{EnvironmentId: "env", Object: "contact", Id: "r1"}
	b, err := m.Vanguard().MarshalAppend(nil, req)
	if err != nil {
		t.Fatal(err)
	}
	gotReq := new(datav1.GetRecordRequest)
	if err := m.Connect().Unmarshal(b, gotReq); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(gotReq, req) {
		t.Errorf("request arrived as %v, want %v", gotReq, req)
	}
	// handler → vanguard, as an answer travels; the target held something
	// before, which must not survive.
	resp := page(3)
	b, err = m.Connect().Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	gotResp := &datav1.ListRecordsResponse{NextPageToken: "stale", Records: page(5).Records}
	if err := m.Vanguard().Unmarshal(b, gotResp); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(gotResp, page(3)) {
		t.Errorf("answer arrived as %v, want %v", gotResp, page(3))
	}
	// Moved, not copied.
	if gotResp.Records[0] != resp.Records[0] {
		t.Error("the records were copied")
	}
	if n := m.Pending(); n != 0 {
		t.Errorf("%d messages left in the mailbox", n)
	}
}

func TestKeepsUnknownFields(t *testing.T) {
	t.Parallel()
	m := New()
	src := &datav1.GetRecordRequest{Id: "r1"}
	src.ProtoReflect().SetUnknown([]byte{0xf8, 0x3f, 0x01}) // field 1023, varint 1
	b, _ := m.Vanguard().MarshalAppend(nil, src)
	dst := new(datav1.GetRecordRequest)
	if err := m.Connect().Unmarshal(b, dst); err != nil {
		t.Fatal(err)
	}
	if string(dst.ProtoReflect().GetUnknown()) != string(src.ProtoReflect().GetUnknown()) {
		t.Errorf("unknown fields %x, want %x", dst.ProtoReflect().GetUnknown(), src.ProtoReflect().GetUnknown())
	}
}

func TestCopiesBetweenGoTypes(t *testing.T) {
	t.Parallel()
	m := New()
	src := &datav1.GetRecordRequest{EnvironmentId: "env", Object: "contact", Id: "r1"}
	b, _ := m.Connect().Marshal(src)
	dst := dynamicpb.NewMessage(src.ProtoReflect().Descriptor())
	if err := m.Vanguard().Unmarshal(b, dst); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(dst, src) {
		t.Errorf("got %v, want %v", dst, src)
	}
}

func TestRefusesWhatIsNotItsHandle(t *testing.T) {
	t.Parallel()
	m, other := New(), New()
	msg := &datav1.GetRecordRequest{Id: "r1"}
	mine, _ := m.Connect().Marshal(msg)
	theirs, _ := other.Connect().Marshal(msg)

	for name, data := range map[string][]byte{
		"empty":               nil,
		"protobuf":            []byte{0x1a, 0x02, 'r', '1'},
		"another mailbox's":   theirs,
		"one byte short":      mine[:handleSize-1],
		"one byte too many":   append(append([]byte(nil), mine...), 0),
		"an unissued handle":  append(append([]byte(nil), mine[:8]...), 0, 0, 0, 0, 0, 0, 0, 99),
		"a JSON body":         []byte(`{"id":"r1"}`),
		"16 bytes of garbage": []byte("0123456789abcdef"),
	} {
		err := m.Connect().Unmarshal(data, new(datav1.GetRecordRequest))
		if !errors.Is(err, errNoHandle) {
			t.Errorf("%s: %v, want %v", name, err, errNoHandle)
		}
	}
	// The handle is still good after all that, once.
	if err := m.Connect().Unmarshal(mine, new(datav1.GetRecordRequest)); err != nil {
		t.Fatal(err)
	}
	if err := m.Connect().Unmarshal(mine, new(datav1.GetRecordRequest)); !errors.Is(err, errNoHandle) {
		t.Errorf("a handle taken twice: %v", err)
	}
}

func TestRefusesAnotherMessageType(t *testing.T) {
	t.Parallel()
	m := New()
	b, _ := m.Connect().Marshal(&datav1.GetRecordRequest{Id: "r1"})
	err := m.Vanguard().Unmarshal(b, new(datav1.DeleteRecordRequest))
	if err == nil {
		t.Fatal("a GetRecordRequest arrived as a DeleteRecordRequest")
	}
	if _, err := m.Connect().Marshal("not a message"); err == nil {
		t.Error("marshaled a string")
	}
	if err := m.Connect().Unmarshal(b, new(string)); err == nil {
		t.Error("unmarshaled into a string")
	}
}

// A message nobody takes (a call abandoned between marshal and unmarshal)
// is dropped after two generations.
func TestDropsWhatNobodyTakes(t *testing.T) {
	t.Parallel()
	m := New()
	age := func() {
		m.mu.Lock()
		m.rotatedAt = time.Now().Add(-maxAge - time.Second)
		m.mu.Unlock()
	}
	a, _ := m.Connect().Marshal(&datav1.GetRecordRequest{Id: "a"})
	age()
	b, _ := m.Connect().Marshal(&datav1.GetRecordRequest{Id: "b"}) // a → previous
	age()
	c, _ := m.Connect().Marshal(&datav1.GetRecordRequest{Id: "c"}) // b → previous, a dropped
	if n := m.Pending(); n != 2 {
		t.Errorf("%d pending, want 2", n)
	}
	if err := m.Connect().Unmarshal(a, new(datav1.GetRecordRequest)); !errors.Is(err, errNoHandle) {
		t.Errorf("a message two generations old: %v", err)
	}
	for _, h := range [][]byte{b, c} {
		if err := m.Connect().Unmarshal(h, new(datav1.GetRecordRequest)); err != nil {
			t.Errorf("a message of this or the last generation: %v", err)
		}
	}
}

func TestConcurrentHops(t *testing.T) {
	t.Parallel()
	m := New()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				id := fmt.Sprintf("%d-%d", g, i)
				b, _ := m.Vanguard().MarshalAppend(nil, &datav1.GetRecordRequest{Id: id})
				got := new(datav1.GetRecordRequest)
				if err := m.Connect().Unmarshal(b, got); err != nil || got.GetId() != id {
					t.Errorf("sent %s, got %s (%v)", id, got.GetId(), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := m.Pending(); n != 0 {
		t.Errorf("%d messages left in the mailbox", n)
	}
}
