// Package handoff passes messages between the REST transcoder (vanguard)
// and the Connect handlers it calls in the same process by reference,
// instead of serializing them. Vanguard speaks to a handler over HTTP, so
// every REST call used to cost a protobuf marshal and unmarshal of the
// request and of the answer, for bytes that never leave the process: for a
// page of 20 records, a third of the server's CPU.
//
// A Mailbox makes the codecs of both sides of that hop (Connect for the
// handler, vanguard for the transcoder). Marshaling files the message in the
// mailbox under a fresh handle and writes the handle; unmarshaling takes the
// message out by its handle and moves its fields into the target. A handle
// is good once, in the process that made it, for a minute at most.
//
// The contract that makes the move safe: a sender does not touch a message
// after marshaling it (vanguard builds a request, sends it and drops it; a
// Connect handler drops its answer once sent). Handlers that accept this
// codec must be reachable only through the transcoder, never from the
// network.
package handoff

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Name is the codec's name: Connect's content type is application/Name.
const Name = "x-envplane-handoff"

// handleSize is a handle's length: the process's key, then a sequence number.
const handleSize = 16

// maxAge is how long a handle is kept at least (and twice that at most):
// both sides of a hop run one after the other, in microseconds; a handle
// nobody took (a call abandoned between the two) must not stay forever.
const maxAge = 30 * time.Second

// Mailbox holds the messages in transit. Its zero value is not usable: use
// New.
type Mailbox struct {
	key uint64 // random per mailbox: a handle from elsewhere is refused

	mu        sync.Mutex
	next      uint64
	current   map[uint64]proto.Message
	previous  map[uint64]proto.Message // the generation before current
	rotatedAt time.Time
}

// New returns an empty mailbox.
func New() *Mailbox {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails on Linux
	return &Mailbox{
		key:       binary.BigEndian.Uint64(b[:]),
		current:   make(map[uint64]proto.Message),
		previous:  make(map[uint64]proto.Message),
		rotatedAt: time.Now(),
	}
}

// Connect is the codec of handlers vanguard calls.
func (m *Mailbox) Connect() connect.Codec { return connectCodec{m} }

// Vanguard is the codec vanguard calls handlers with.
func (m *Mailbox) Vanguard() vanguard.Codec { return vanguardCodec{m} }

type connectCodec struct{ m *Mailbox }

func (connectCodec) Name() string { return Name }

func (c connectCodec) Marshal(v any) ([]byte, error) {
	msg, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("handoff: %T is not a protobuf message", v)
	}
	return c.m.put(make([]byte, 0, handleSize), msg), nil
}

func (c connectCodec) Unmarshal(data []byte, v any) error {
	msg, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("handoff: %T is not a protobuf message", v)
	}
	return c.m.take(data, msg)
}

type vanguardCodec struct{ m *Mailbox }

func (vanguardCodec) Name() string { return Name }

func (c vanguardCodec) MarshalAppend(b []byte, msg proto.Message) ([]byte, error) {
	return c.m.put(b, msg), nil
}

// Unmarshal takes a handler's answer. Failing here is the server's fault,
// and vanguard answers a Connect error's code as it is (any other error
// would be UNKNOWN).
func (c vanguardCodec) Unmarshal(data []byte, msg proto.Message) error {
	if err := c.m.take(data, msg); err != nil {
		return connect.NewError(connect.CodeInternal, err)
	}
	return nil
}

// put files msg and appends its handle to b.
func (m *Mailbox) put(b []byte, msg proto.Message) []byte {
	m.mu.Lock()
	if now := time.Now(); now.Sub(m.rotatedAt) > maxAge {
		// What is in previous has waited a whole generation: nobody will
		// take it.
		m.previous, m.current = m.current, make(map[uint64]proto.Message)
		m.rotatedAt = now
	}
	m.next++
	seq := m.next
	m.current[seq] = msg
	m.mu.Unlock()
	b = binary.BigEndian.AppendUint64(b, m.key)
	return binary.BigEndian.AppendUint64(b, seq)
}

// take moves the message filed under the handle data into dst.
func (m *Mailbox) take(data []byte, dst proto.Message) error {
	if len(data) != handleSize || binary.BigEndian.Uint64(data) != m.key {
		return errNoHandle
	}
	seq := binary.BigEndian.Uint64(data[8:])
	m.mu.Lock()
	src, ok := m.current[seq]
	if ok {
		delete(m.current, seq)
	} else if src, ok = m.previous[seq]; ok {
		delete(m.previous, seq)
	}
	m.mu.Unlock()
	if !ok {
		return errNoHandle
	}
	return move(dst, src)
}

var errNoHandle = errors.New("handoff: no message under this handle")

// move makes dst hold what src holds. For messages of one Go type (the
// generated type on both sides, always, in envplane) the fields are moved,
// not copied: dst shares src's sub-messages, lists and maps, which is why
// the sender must be done with src. Any other pair goes through the binary
// encoding.
func move(dst, src proto.Message) error {
	d, s := dst.ProtoReflect(), src.ProtoReflect()
	if d.Descriptor().FullName() != s.Descriptor().FullName() {
		return fmt.Errorf("handoff: want %s, the handle holds %s", d.Descriptor().FullName(), s.Descriptor().FullName())
	}
	if reflect.TypeOf(dst) != reflect.TypeOf(src) {
		b, err := proto.Marshal(src)
		if err != nil {
			return fmt.Errorf("handoff: %w", err)
		}
		return proto.Unmarshal(b, dst)
	}
	proto.Reset(dst)
	s.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		d.Set(fd, v)
		return true
	})
	if u := s.GetUnknown(); len(u) > 0 {
		d.SetUnknown(u)
	}
	return nil
}

// Pending is how many messages wait in the mailbox: none between calls,
// unless a call was abandoned between its two sides.
func (m *Mailbox) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.current) + len(m.previous)
}
