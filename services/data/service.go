// Package data implements DataService: records of the objects defined in an
// environment, read and written in that environment's own database. Every
// call arrives resolved (resolve.From) and authorized for the environment;
// the service checks the caller's role and validates records against the
// object's definition before any engine sees them.
package data

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"

	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	"github.com/envplane/envplane/gen/envplane/data/v1/datav1connect"
	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/dberror"
	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/objects"
	"github.com/envplane/envplane/internal/registry"
	"github.com/envplane/envplane/internal/reqlog"
	"github.com/envplane/envplane/internal/resolve"
	"github.com/envplane/envplane/internal/schema"
)

// ErrorInfo reasons of DataService.
const (
	ReasonObjectNotDefined    = "OBJECT_NOT_DEFINED"
	ReasonRecordNotFound      = "RECORD_NOT_FOUND"
	ReasonRecordExists        = "RECORD_ALREADY_EXISTS"
	ReasonUniqueViolation     = "UNIQUE_VIOLATION"
	ReasonInvalidRecord       = "INVALID_RECORD"
	ReasonRecordTooLarge      = "RECORD_TOO_LARGE"
	ReasonETagMismatch        = "ETAG_MISMATCH"
	ReasonDatabaseUnavailable = "DATABASE_UNAVAILABLE"
	ReasonInvalidMask         = "INVALID_FIELD_MASK"
	ReasonBatchEnvironment    = "BATCH_ENVIRONMENT_MISMATCH"
	ReasonBatchTooLarge       = "BATCH_TOO_LARGE"
)

// MaxBatchWrites bounds the writes of one BatchWriteRecords: one transaction
// holds the environment's writer for all of them.
const MaxBatchWrites = 500

// Service implements datav1connect.DataServiceHandler.
type Service struct {
	registry *registry.Registry
	objects  *objects.Cache
	envs     dberror.Environments
	lists    *lister
	log      *slog.Logger
	now      func() time.Time
	reopened sync.Map // environment id → time.Time of the last reopen
}

var _ datav1connect.DataServiceHandler = (*Service)(nil)

// New returns the service. cursorKey authenticates page tokens.
func New(reg *registry.Registry, defs *objects.Cache, envs dberror.Environments, cursorKey []byte, log *slog.Logger) (*Service, error) {
	lists, err := newLister(cursorKey)
	if err != nil {
		return nil, err
	}
	return &Service{
		registry: reg,
		objects:  defs,
		envs:     envs,
		lists:    lists,
		log:      log.With("service", "data"),
		now:      func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) },
	}, nil
}

// call is what every RPC needs: the environment's object and a driver lease.
type call struct {
	env   string
	obj   *schema.Object
	lease *registry.Lease
}

func (s *Service) begin(ctx context.Context, object, role string) (*call, error) {
	env, _ := resolve.From(ctx)
	if err := auth.From(ctx).RequireRole(role); err != nil {
		return nil, err
	}
	// The database opens first: opening reconciles it with the control
	// plane (see the metadata service's Reconciler), which may store a newer definition
	// that the read below must see.
	lease, err := s.registry.Acquire(ctx, env.ID)
	if err != nil {
		return nil, s.unavailable(ctx, err)
	}
	obj, err := s.objects.Object(ctx, env.ID, object)
	if err != nil {
		lease.Release()
		if errors.Is(err, objects.ErrNotDefined) {
			return nil, apierr.New(connect.CodeNotFound, ReasonObjectNotDefined, "the environment has no object "+object, "object", object)
		}
		return nil, s.internal(ctx, err)
	}
	return &call{env: env.ID, obj: obj, lease: lease}, nil
}

// CreateRecord implements DataService.CreateRecord.
func (s *Service) CreateRecord(ctx context.Context, req *connect.Request[datav1.CreateRecordRequest]) (*connect.Response[datav1.CreateRecordResponse], error) {
	r, err := s.createRecord(ctx, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&datav1.CreateRecordResponse{Record: r.proto()}), nil
}

func (s *Service) createRecord(ctx context.Context, m *datav1.CreateRecordRequest) (*shown, error) {
	r, err := s.createRecordOnce(ctx, m)
	if changedUnder(err) {
		r, err = s.createRecordOnce(ctx, m)
	}
	return r, settled(err)
}

func (s *Service) createRecordOnce(ctx context.Context, m *datav1.CreateRecordRequest) (*shown, error) {
	c, err := s.begin(ctx, m.GetObject(), auth.RoleEditor)
	if err != nil {
		return nil, err
	}
	defer c.lease.Release()
	rec, err := s.newRecord(c.obj, m.GetRecord(), "record.")
	if err != nil {
		return nil, err
	}
	if err := c.lease.Driver.Insert(ctx, c.obj, rec); err != nil {
		return nil, s.writeError(ctx, c.obj, err)
	}
	return &shown{obj: c.obj, rec: rec}, nil
}

// newRecord validates a create and fills the system fields.
func (s *Service) newRecord(obj *schema.Object, in *structpb.Struct, prefix string) (driver.Record, error) {
	if proto.Size(in) > maxRecordBytes {
		return nil, apierr.InvalidArgument(ReasonRecordTooLarge, fmt.Sprintf("a record may hold at most %d bytes", maxRecordBytes))
	}
	rec, violations := recordInput(obj, in, true, prefix)
	if len(violations) > 0 {
		return nil, invalidRecord(violations)
	}
	if _, ok := rec[schema.FieldID]; !ok {
		rec[schema.FieldID] = uuid.Must(uuid.NewV7()).String()
	}
	now := s.now()
	rec[schema.FieldCreatedAt], rec[schema.FieldUpdatedAt], rec[schema.FieldETag] = now, now, newETag()
	return rec, nil
}

// GetRecord implements DataService.GetRecord.
func (s *Service) GetRecord(ctx context.Context, req *connect.Request[datav1.GetRecordRequest]) (*connect.Response[datav1.GetRecordResponse], error) {
	r, err := s.getRecord(ctx, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&datav1.GetRecordResponse{Record: r.proto()}), nil
}

func (s *Service) getRecord(ctx context.Context, m *datav1.GetRecordRequest) (*shown, error) {
	r, err := s.getRecordOnce(ctx, m)
	if changedUnder(err) {
		r, err = s.getRecordOnce(ctx, m)
	}
	return r, settled(err)
}

func (s *Service) getRecordOnce(ctx context.Context, m *datav1.GetRecordRequest) (*shown, error) {
	c, err := s.begin(ctx, m.GetObject(), auth.RoleViewer)
	if err != nil {
		return nil, err
	}
	defer c.lease.Release()
	mask, err := readMask(c.obj, m.GetReadMask())
	if err != nil {
		return nil, err
	}
	rec, err := c.lease.Driver.Get(ctx, c.obj, m.GetId())
	if err != nil {
		return nil, s.writeError(ctx, c.obj, err)
	}
	return &shown{obj: c.obj, rec: rec, mask: mask}, nil
}

// UpdateRecord implements DataService.UpdateRecord: the fields sent (or
// those named by update_mask) change; a stale etag is ABORTED.
func (s *Service) UpdateRecord(ctx context.Context, req *connect.Request[datav1.UpdateRecordRequest]) (*connect.Response[datav1.UpdateRecordResponse], error) {
	r, err := s.updateRecord(ctx, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&datav1.UpdateRecordResponse{Record: r.proto()}), nil
}

func (s *Service) updateRecord(ctx context.Context, m *datav1.UpdateRecordRequest) (*shown, error) {
	r, err := s.updateRecordOnce(ctx, m)
	if changedUnder(err) {
		r, err = s.updateRecordOnce(ctx, m)
	}
	return r, settled(err)
}

func (s *Service) updateRecordOnce(ctx context.Context, m *datav1.UpdateRecordRequest) (*shown, error) {
	c, err := s.begin(ctx, m.GetObject(), auth.RoleEditor)
	if err != nil {
		return nil, err
	}
	defer c.lease.Release()
	set, err := s.changes(c.obj, m, "record.")
	if err != nil {
		return nil, err
	}
	rec, err := c.lease.Driver.Update(ctx, c.obj, m.GetId(), set, m.GetEtag())
	if err != nil {
		return nil, s.writeError(ctx, c.obj, err)
	}
	return &shown{obj: c.obj, rec: rec}, nil
}

// changes validates an update and stamps it.
func (s *Service) changes(obj *schema.Object, m *datav1.UpdateRecordRequest, prefix string) (driver.Record, error) {
	in := m.GetRecord()
	if proto.Size(in) > maxRecordBytes {
		return nil, apierr.InvalidArgument(ReasonRecordTooLarge, fmt.Sprintf("a record may hold at most %d bytes", maxRecordBytes))
	}
	if paths := m.GetUpdateMask().GetPaths(); len(paths) > 0 {
		limited := &structpb.Struct{Fields: map[string]*structpb.Value{}}
		for _, p := range paths {
			if _, ok := obj.Field(p); !ok {
				return nil, apierr.InvalidArgument(ReasonInvalidMask, "update_mask names "+p+", which the object does not have",
					apierr.FieldViolation{Field: "update_mask", Description: "unknown field " + p})
			}
			if v, ok := in.GetFields()[p]; ok {
				limited.Fields[p] = v
			} else {
				limited.Fields[p] = structpb.NewNullValue() // in the mask, absent from the record: cleared
			}
		}
		in = limited
	}
	set, violations := recordInput(obj, in, false, prefix)
	if len(violations) > 0 {
		return nil, invalidRecord(violations)
	}
	set[schema.FieldUpdatedAt], set[schema.FieldETag] = s.now(), newETag()
	return set, nil
}

// DeleteRecord implements DataService.DeleteRecord.
func (s *Service) DeleteRecord(ctx context.Context, req *connect.Request[datav1.DeleteRecordRequest]) (*connect.Response[datav1.DeleteRecordResponse], error) {
	err := s.deleteRecordOnce(ctx, req.Msg)
	if changedUnder(err) {
		err = s.deleteRecordOnce(ctx, req.Msg)
	}
	if err != nil {
		return nil, settled(err)
	}
	return connect.NewResponse(&datav1.DeleteRecordResponse{}), nil
}

func (s *Service) deleteRecordOnce(ctx context.Context, m *datav1.DeleteRecordRequest) error {
	c, err := s.begin(ctx, m.GetObject(), auth.RoleEditor)
	if err != nil {
		return err
	}
	defer c.lease.Release()
	if err := c.lease.Driver.Delete(ctx, c.obj, m.GetId(), m.GetEtag()); err != nil {
		return s.writeError(ctx, c.obj, err)
	}
	return nil
}

// BatchWriteRecords implements DataService.BatchWriteRecords: all writes in
// one transaction of the environment's database, or none.
func (s *Service) BatchWriteRecords(ctx context.Context, req *connect.Request[datav1.BatchWriteRecordsRequest]) (*connect.Response[datav1.BatchWriteRecordsResponse], error) {
	resp, err := s.batchWriteRecordsOnce(ctx, req)
	if changedUnder(err) {
		resp, err = s.batchWriteRecordsOnce(ctx, req)
	}
	return resp, settled(err)
}

func (s *Service) batchWriteRecordsOnce(ctx context.Context, req *connect.Request[datav1.BatchWriteRecordsRequest]) (*connect.Response[datav1.BatchWriteRecordsResponse], error) {
	env, _ := resolve.From(ctx)
	if err := auth.From(ctx).RequireRole(auth.RoleEditor); err != nil {
		return nil, err
	}
	writes := req.Msg.GetWrites()
	if len(writes) > MaxBatchWrites {
		return nil, apierr.InvalidArgument(ReasonBatchTooLarge, fmt.Sprintf("a batch holds at most %d writes", MaxBatchWrites),
			apierr.FieldViolation{Field: "writes", Description: fmt.Sprintf("%d writes, more than %d", len(writes), MaxBatchWrites)})
	}
	// The database opens first, as in begin.
	lease, err := s.registry.Acquire(ctx, env.ID)
	if err != nil {
		return nil, s.unavailable(ctx, err)
	}
	defer lease.Release()
	ops := make([]driver.Op, len(writes))
	objs := make([]*schema.Object, len(writes))
	for i, w := range writes {
		prefix := fmt.Sprintf("writes[%d].", i)
		var object, envID string
		switch op := w.GetOperation().(type) {
		case *datav1.RecordWrite_Create:
			object, envID = op.Create.GetObject(), op.Create.GetEnvironmentId()
		case *datav1.RecordWrite_Update:
			object, envID = op.Update.GetObject(), op.Update.GetEnvironmentId()
		case *datav1.RecordWrite_Delete:
			object, envID = op.Delete.GetObject(), op.Delete.GetEnvironmentId()
		}
		if envID != "" && envID != env.ID {
			return nil, withIndex(apierr.InvalidArgument(ReasonBatchEnvironment, "every write of a batch goes to the batch's environment",
				apierr.FieldViolation{Field: prefix + "environment_id", Description: "differs from the batch's environment"}), i)
		}
		obj, err := s.objects.Object(ctx, env.ID, object)
		if errors.Is(err, objects.ErrNotDefined) {
			return nil, apierr.New(connect.CodeNotFound, ReasonObjectNotDefined, "write "+fmt.Sprint(i)+": the environment has no object "+object,
				"object", object, "index", fmt.Sprint(i))
		}
		if err != nil {
			return nil, s.internal(ctx, err)
		}
		objs[i] = obj
		switch op := w.GetOperation().(type) {
		case *datav1.RecordWrite_Create:
			rec, err := s.newRecord(obj, op.Create.GetRecord(), prefix+"create.record.")
			if err != nil {
				return nil, withIndex(err, i)
			}
			ops[i] = driver.Op{Kind: driver.OpInsert, Object: obj, Record: rec}
		case *datav1.RecordWrite_Update:
			set, err := s.changes(obj, op.Update, prefix+"update.record.")
			if err != nil {
				return nil, withIndex(err, i)
			}
			ops[i] = driver.Op{Kind: driver.OpUpdate, Object: obj, ID: op.Update.GetId(), Record: set, IfETag: op.Update.GetEtag()}
		case *datav1.RecordWrite_Delete:
			ops[i] = driver.Op{Kind: driver.OpDelete, Object: obj, ID: op.Delete.GetId(), IfETag: op.Delete.GetEtag()}
		}
	}
	recs, err := lease.Driver.Batch(ctx, ops)
	if err != nil {
		var be *driver.BatchError
		if errors.As(err, &be) && be.Index >= 0 && be.Index < len(objs) {
			err := s.writeError(ctx, objs[be.Index], be.Err)
			if changedUnder(err) {
				return nil, err // run again, whole
			}
			return nil, withIndex(err, be.Index)
		}
		return nil, s.writeError(ctx, nil, err)
	}
	resp := &datav1.BatchWriteRecordsResponse{Results: make([]*datav1.RecordWriteResult, len(recs))}
	for i, rec := range recs {
		resp.Results[i] = &datav1.RecordWriteResult{}
		if rec != nil {
			resp.Results[i].Record = recordToStruct(objs[i], rec, nil)
		}
	}
	return connect.NewResponse(resp), nil
}

// writeError maps a driver error to the client's; obj may be nil.
func (s *Service) writeError(ctx context.Context, obj *schema.Object, err error) error {
	env, _ := resolve.From(ctx)
	if obj != nil && errors.Is(err, driver.ErrNoTable) {
		// Deleted meanwhile (on another replica, say): the object is not
		// defined, which no repair should bring back.
		if defined, derr := s.objects.Defined(ctx, env.ID, obj.Name); derr == nil && !defined {
			return apierr.New(connect.CodeNotFound, ReasonObjectNotDefined, "the environment has no object "+obj.Name, "object", obj.Name)
		}
	}
	if obj != nil && driver.FoundDuringCall(err) {
		// The table is not what the definition this call read says: a
		// change made since the database opened (another replica's, whose
		// notification is still on its way, or one a crash cut short).
		// Nothing was written; the call runs again on the database
		// reopened (which reconciles it) with the definition read again.
		s.reopen(env.ID)
		s.objects.Forget(env.ID, obj.Name)
		known := s.classify(ctx, env.ID, err)
		if known == nil {
			known = s.internal(ctx, err)
		}
		return &tableChanged{err: known}
	}
	if known := s.classify(ctx, env.ID, err); known != nil {
		return known
	}
	var uv *driver.UniqueViolationError
	switch {
	case errors.As(err, &uv):
		return apierr.New(connect.CodeAlreadyExists, ReasonUniqueViolation,
			fmt.Sprintf("another record has the same %v", uv.Fields), "fields", fmt.Sprint(uv.Fields))
	case errors.Is(err, driver.ErrAlreadyExists):
		return apierr.New(connect.CodeAlreadyExists, ReasonRecordExists, "a record with this id exists")
	case errors.Is(err, driver.ErrNotFound):
		return apierr.New(connect.CodeNotFound, ReasonRecordNotFound, "record not found")
	case errors.Is(err, driver.ErrEtagMismatch):
		return apierr.New(connect.CodeAborted, ReasonETagMismatch, "the record changed since you read it (etag mismatch); read it again")
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, errors.New("request canceled"))
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("deadline exceeded"))
	case errors.Is(err, driver.ErrUnavailable):
		return s.unavailable(ctx, err)
	}
	return s.internal(ctx, err)
}

// tableChanged is the error of a call that found its table changed since
// its database opened (see writeError): the call runs once more, and err
// (SCHEMA_DRIFT) is the answer when the table is still not what the
// definition says.
type tableChanged struct{ err error }

func (e *tableChanged) Error() string { return e.err.Error() }
func (e *tableChanged) Unwrap() error { return e.err }

// changedUnder reports whether a call's error asks for the call to run
// once more (tableChanged).
func changedUnder(err error) bool {
	_, ok := err.(*tableChanged)
	return ok
}

// settled is the error a client gets: a tableChanged after the second run
// is the drift it found.
func settled(err error) error {
	if tc, ok := err.(*tableChanged); ok {
		return tc.err
	}
	return err
}

// reopenEvery is how often at most a call that found a table other than
// its definition says drops its environment's driver.
const reopenEvery = time.Second

// reopen drops the environment's driver, so that the next call opens the
// database again and reconciles it with the control plane: the table
// changed since it was opened (another replica's change whose definition
// is not stored yet), and what reconciling finds then is either the stored
// definition rolled forward or the drift, reported (and then refused
// without reaching the engine, so reopening stops).
func (s *Service) reopen(environmentID string) {
	now := time.Now()
	if last, ok := s.reopened.Load(environmentID); ok {
		// Of concurrent calls, one reopens: another would drop the driver
		// the first just opened and reconciled.
		if now.Sub(last.(time.Time)) < reopenEvery || !s.reopened.CompareAndSwap(environmentID, last, now) {
			return
		}
	} else if _, loaded := s.reopened.LoadOrStore(environmentID, now); loaded {
		return
	}
	s.registry.Invalidate(environmentID)
}

// withIndex adds the failing write's index to a batch error, keeping its
// code, reason and field violations.
func withIndex(err error, i int) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err
	}
	info := apierr.Info(err)
	md := []string{"index", strconv.Itoa(i)}
	for k, v := range info.GetMetadata() {
		md = append(md, k, v)
	}
	out := apierr.New(ce.Code(), info.GetReason(), fmt.Sprintf("write %d: %s", i, ce.Message()), md...)
	if br := apierr.BadRequest(err); br != nil {
		if d, derr := connect.NewErrorDetail(br); derr == nil {
			out.AddDetail(d)
		}
	}
	return out
}

func invalidRecord(violations []apierr.FieldViolation) error {
	msg := "the record is invalid: " + violations[0].Field + ": " + violations[0].Description
	if len(violations) > 1 {
		msg += fmt.Sprintf(" (and %d more)", len(violations)-1)
	}
	return apierr.InvalidArgument(ReasonInvalidRecord, msg, violations...)
}

// readMask returns the fields to show (nil: all; empty: system fields only).
func readMask(obj *schema.Object, m *fieldmaskpb.FieldMask) (map[string]bool, error) {
	if len(m.GetPaths()) == 0 {
		return nil, nil
	}
	out := make(map[string]bool, len(m.GetPaths()))
	for _, p := range m.GetPaths() {
		if schema.IsSystemField(p) {
			continue // always returned
		}
		if _, ok := obj.Field(p); !ok {
			return nil, apierr.InvalidArgument(ReasonInvalidMask, "read_mask names "+p+", which the object does not have",
				apierr.FieldViolation{Field: "read_mask", Description: "unknown field " + p})
		}
		out[p] = true
	}
	return out, nil
}

func newETag() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *Service) unavailable(ctx context.Context, err error) error {
	env, _ := resolve.From(ctx)
	if known := s.classify(ctx, env.ID, err); known != nil {
		return known
	}
	reqlog.Logger(ctx, s.log).Warn("environment database unavailable")
	reqlog.Logger(ctx, s.log).Debug("environment database failure cause", "error", err)
	return apierr.New(connect.CodeUnavailable, ReasonDatabaseUnavailable, "the environment's database cannot be reached now; retry")
}

// classify is dberror.Classify with this service's log.
func (s *Service) classify(ctx context.Context, environmentID string, err error) error {
	return dberror.Classify(ctx, s.envs, environmentID, err, reqlog.Logger(ctx, s.log))
}

func (s *Service) internal(ctx context.Context, err error) error {
	env, _ := resolve.From(ctx)
	if known := s.classify(ctx, env.ID, err); known != nil {
		return known
	}
	reqlog.Logger(ctx, s.log).Error("data service failed", "error", err)
	return apierr.Internal()
}
