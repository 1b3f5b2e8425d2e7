// Package metadata implements MetadataService: each environment's object
// definitions, stored in the control plane and versioned, and the migration
// of that environment's own database to match them.
package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/gen/envplane/metadata/v1/metadatav1connect"
	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/dberror"
	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/filter"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/objects"
	"github.com/envplane/envplane/internal/pagetoken"
	"github.com/envplane/envplane/internal/registry"
	"github.com/envplane/envplane/internal/reqlog"
	"github.com/envplane/envplane/internal/resolve"
	"github.com/envplane/envplane/internal/schema"
)

// ErrorInfo reasons of MetadataService.
const (
	ReasonObjectNotDefined          = "OBJECT_NOT_DEFINED"
	ReasonInvalidObjectDefinition   = "INVALID_OBJECT_DEFINITION"
	ReasonDestructiveChange         = "DESTRUCTIVE_CHANGE"
	ReasonRequiredFieldNeedsDefault = "REQUIRED_FIELD_NEEDS_DEFAULT"
	ReasonObjectHasRecords          = "OBJECT_HAS_RECORDS"
	ReasonConcurrentModification    = "CONCURRENT_MODIFICATION"
	ReasonMigrationFailed           = "MIGRATION_FAILED"
	ReasonDatabaseUnavailable       = "DATABASE_UNAVAILABLE"
	ReasonInvalidPageToken          = "INVALID_PAGE_TOKEN"
	// ReasonObjectNameReserved: the name is one of an engine's system
	// catalogs (pg_…, sqlite_…).
	ReasonObjectNameReserved = "OBJECT_NAME_RESERVED"
	// ReasonFieldNameReserved: the name is a system column of an engine.
	ReasonFieldNameReserved = "FIELD_NAME_RESERVED"
	// ReasonChangeInProgress: the call's deadline passed while another
	// change of the same object was applied.
	ReasonChangeInProgress = "CHANGE_IN_PROGRESS"
	// ReasonObjectTableExists: a table of the object's name exists that no
	// definition describes; PutObject does not take it over unasked.
	ReasonObjectTableExists = "OBJECT_TABLE_EXISTS"
)

// migrationTimeout bounds one migration of an environment's database.
const migrationTimeout = 2 * time.Minute

// Service implements metadatav1connect.MetadataServiceHandler. Every call
// arrives resolved: resolve.From(ctx) is the environment.
type Service struct {
	store    controlplane.ObjectStore
	envs     dberror.Environments
	registry *registry.Registry
	cache    *objects.Cache
	events   invalidate.Publisher
	log      *slog.Logger
	now      func() time.Time
	// changes serializes the changes of one object: a change reads the
	// current version, migrates the database and only then stores the new
	// version, checking the one it read. Two changes interleaving would both
	// migrate while one of them lost the version check, leaving the
	// database unlike the stored definition.
	changes keyedLock
}

var _ metadatav1connect.MetadataServiceHandler = (*Service)(nil)

// New returns the service.
func New(store controlplane.ObjectStore, envs dberror.Environments, reg *registry.Registry, cache *objects.Cache, events invalidate.Publisher, log *slog.Logger) *Service {
	return &Service{
		store: store, envs: envs, registry: reg, cache: cache, events: events,
		log: log.With("service", "metadata"),
		now: func() time.Time { return time.Now().UTC() },
	}
}

// PutObject implements MetadataService.PutObject.
func (s *Service) PutObject(ctx context.Context, req *connect.Request[metadatav1.PutObjectRequest]) (*connect.Response[metadatav1.PutObjectResponse], error) {
	env, _ := resolve.From(ctx)
	if err := auth.From(ctx).RequireRole(auth.RoleDeveloper); err != nil {
		return nil, err
	}
	m := req.Msg
	if err := reserved(m.GetName(), m.GetObject()); err != nil {
		return nil, err
	}
	next, violations := objects.FromProto(m.GetName(), m.GetObject())
	if n := m.GetObject().GetName(); n != "" && n != m.GetName() {
		violations = append(violations, apierr.FieldViolation{Field: "object.name", Description: "must be empty or equal the name in the path"})
	}
	if len(violations) > 0 {
		return nil, apierr.InvalidArgument(ReasonInvalidObjectDefinition, "the object definition is invalid: "+violations[0].Field+": "+violations[0].Description, violations...)
	}
	repair := repairFromProto(m.GetRepair())
	if !m.GetValidateOnly() {
		unlock, err := s.changes.lock(ctx, env.ID+"/"+m.GetName())
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	// The database opens first: opening reconciles it with the control
	// plane, so the definition read next is the one the database holds.
	var lease *registry.Lease
	if !m.GetValidateOnly() {
		l, err := s.registry.Acquire(ctx, env.ID)
		if err != nil {
			return nil, s.databaseError(ctx, err)
		}
		defer l.Release()
		lease = l
	}
	current, err := s.current(ctx, env.ID, m.GetName())
	if err != nil {
		return nil, err
	}
	if current == nil && repair == driver.RepairReapply {
		return nil, apierr.InvalidArgument(ReasonInvalidObjectDefinition,
			"REPAIR_REAPPLY mends an object that is defined; to take over a table no definition describes, use REPAIR_ADOPT (its columns must match)",
			apierr.FieldViolation{Field: "repair", Description: "REPAIR_REAPPLY needs a defined object"})
	}
	if current != nil && repair == driver.RepairNone && lease != nil {
		// A change made on a table that is not what its definition says
		// would plan from a picture that is false: repair first.
		if reason := driftOf(lease, current); reason != "" {
			return nil, dberror.Error(driver.Drift(current.Name, reason))
		}
	}
	steps := schema.Plan(current, next)
	if current != nil && repair == driver.RepairReapply && (len(steps) > 0 || schema.Changed(current, next)) {
		// REAPPLY makes the table what the stored definition says; a
		// change riding on it would skip the checks a change gets
		// (required fields, drift, the storage limit). ADOPT may carry
		// one: the table must already hold the new definition, which is
		// the way out of a drift REAPPLY cannot mend (a column of another
		// type: adopt the definition without that field).
		return nil, apierr.InvalidArgument(ReasonInvalidObjectDefinition,
			"REPAIR_REAPPLY carries the stored definition unchanged (GetObject shows it); change the definition after the repair, or adopt the table as it is with REPAIR_ADOPT",
			apierr.FieldViolation{Field: "repair", Description: "the definition differs from the stored one"})
	}
	// A repair always records a new version: other replicas, which found the
	// drift at their own open, lift it when they see a later version.
	if repair == driver.RepairNone && current != nil && len(steps) == 0 && !schema.Changed(current, next) {
		return connect.NewResponse(&metadatav1.PutObjectResponse{Object: objects.ToProto(current)}), nil
	}
	now := s.now()
	next.Version = 1
	next.CreateTime, next.UpdateTime = now, now
	var expected int64
	if current != nil {
		expected = current.Version
		next.Version = current.Version + 1
		next.CreateTime = current.CreateTime
	}
	// validate_only plans every step, destructive ones included (each says
	// so): it is how a caller sees what allow_destructive would permit.
	if m.GetValidateOnly() {
		return connect.NewResponse(&metadatav1.PutObjectResponse{Object: objects.ToProto(next), Steps: stepsToProto(steps)}), nil
	}
	var destructive []string
	for _, st := range steps {
		if st.Destructive {
			destructive = append(destructive, st.Description)
		}
	}
	if len(destructive) > 0 && !m.GetAllowDestructive() {
		return nil, apierr.New(connect.CodeFailedPrecondition, ReasonDestructiveChange,
			"the change can lose data or fail on existing records: "+strings.Join(destructive, "; ")+
				"; send allow_destructive to apply it (validate_only shows every step)",
			"steps", strings.Join(destructive, "; "))
	}

	if current != nil && repair == driver.RepairNone {
		if err := s.checkRequiredFields(ctx, lease, current, steps); err != nil {
			return nil, err
		}
	}
	encoded, err := objects.Encode(next)
	if err != nil {
		return nil, s.internal(ctx, err)
	}
	ledgerDef, err := ledgerDefinition(next)
	if err != nil {
		return nil, s.internal(ctx, err)
	}
	stepsJSON, _ := json.Marshal(stepsToProto(steps))
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), migrationTimeout)
	defer cancel()
	// The database first, recording the change in its ledger in the same
	// transaction; then the control plane. A crash in between leaves the
	// ledger a version ahead, which the next open of the database stores
	// (see Reconciler): the change is never half made.
	err = lease.Driver.Migrate(mctx, driver.Change{
		Object: next, Steps: steps, From: expected, Repair: repair,
		Definition: ledgerDef, Applied: stepsJSON, ApplyTime: now,
	})
	if err != nil {
		if errors.Is(err, driver.ErrLedgerConflict) {
			// The database changed under the control plane's picture:
			// reopening it reconciles the two for the caller's next read.
			s.registry.Invalidate(env.ID)
		}
		return nil, s.migrationError(ctx, env.ID, next, steps, repair, err)
	}
	_, err = s.store.PutObjectDefinition(mctx, controlplane.ObjectDefinition{
		EnvironmentID: env.ID, Name: next.Name, Definition: encoded, Version: next.Version,
		CreateTime: next.CreateTime, UpdateTime: next.UpdateTime,
	}, expected, controlplane.ObjectMigration{
		EnvironmentID: env.ID, Name: next.Name, Version: next.Version, Steps: stepsJSON, ApplyTime: now,
	})
	if errors.Is(err, controlplane.ErrVersionConflict) && s.storedAlready(mctx, env.ID, next, ledgerDef) {
		err = nil // another replica's open reconciled this very change first
	}
	if err != nil {
		// The database holds the change and the control plane does not:
		// reopening the database reconciles the two (storing the
		// definition from the ledger) as soon as the control plane takes
		// writes again, and a retry of this call converges meanwhile.
		s.registry.Invalidate(env.ID)
		if errors.Is(err, controlplane.ErrVersionConflict) {
			return nil, apierr.New(connect.CodeAborted, ReasonConcurrentModification,
				"the object changed while this change was applied; read it and apply again (re-applying converges)")
		}
		reqlog.Logger(ctx, s.log).Error("storing an applied definition failed", "environment_id", env.ID, "object", next.Name, "error", err)
		return nil, notRecorded(err, "the change is applied to the environment's database and could not be stored as the definition now; "+
			"it is stored when the database is next opened, and re-applying it converges")
	}
	s.publish(ctx, env.ID, next.Name)
	reqlog.Logger(ctx, s.log).Info("object definition applied", "environment_id", env.ID, "object", next.Name,
		"version", next.Version, "steps", len(steps), "repair", m.GetRepair().String())
	return connect.NewResponse(&metadatav1.PutObjectResponse{Object: objects.ToProto(next), Steps: stepsToProto(steps), Applied: true}), nil
}

// reserved refuses names an engine keeps for itself, before anything else
// is looked at: no engine may be asked to create them.
func reserved(name string, obj *metadatav1.ObjectDefinition) error {
	if schema.ReservedObjectName(name) {
		return apierr.InvalidArgument(ReasonObjectNameReserved,
			"object name "+name+" is reserved: names starting with pg_ or sqlite_ are an engine's own, and pg, sqlite, "+
				"names holding __ and names ending in _pkey would collide with the names of indexes",
			apierr.FieldViolation{Field: "name", Description: "is reserved (pg_…, sqlite_…, pg, sqlite, …__…, …_pkey)"})
	}
	for i, f := range obj.GetFields() {
		if schema.ReservedFieldName(f.GetName()) {
			field := fmt.Sprintf("object.fields[%d].name", i)
			return apierr.InvalidArgument(ReasonFieldNameReserved,
				"field name "+f.GetName()+" is reserved: it is a system column of a database engine",
				apierr.FieldViolation{Field: field, Description: "is a system column name (oid, tableoid, xmin, xmax, cmin, cmax, ctid, rowid)"})
		}
	}
	return nil
}

func repairFromProto(r metadatav1.Repair) driver.Repair {
	switch r {
	case metadatav1.Repair_REPAIR_REAPPLY:
		return driver.RepairReapply
	case metadatav1.Repair_REPAIR_ADOPT:
		return driver.RepairAdopt
	}
	return driver.RepairNone
}

// storedAlready reports whether the control plane holds next (by version
// and definition): what a reconcile of another open stores when it finds
// this change in the ledger before this call stored it.
func (s *Service) storedAlready(ctx context.Context, environmentID string, next *schema.Object, ledgerDef []byte) bool {
	cur, err := s.current(ctx, environmentID, next.Name)
	if err != nil || cur == nil || cur.Version != next.Version {
		return false
	}
	def, err := ledgerDefinition(cur)
	return err == nil && string(def) == string(ledgerDef)
}

// migrationError answers a migration the database refused; nothing of it
// was applied.
func (s *Service) migrationError(ctx context.Context, environmentID string, next *schema.Object, steps []schema.Step, repair driver.Repair, err error) error {
	log := reqlog.Logger(ctx, s.log)
	switch {
	case errors.Is(err, driver.ErrLedgerConflict) && repair == driver.RepairAdopt:
		return apierr.New(connect.CodeFailedPrecondition, dberror.ReasonSchemaDrift,
			"the environment's database records another version of "+next.Name+" than the stored definition; "+
				"repair REPAIR_REAPPLY makes the table match the definition", "object", next.Name)
	case errors.Is(err, driver.ErrLedgerConflict):
		return apierr.New(connect.CodeAborted, ReasonConcurrentModification,
			"the object changed while this change was applied; read it and apply again (re-applying converges)")
	case errors.Is(err, driver.ErrUnknownTable):
		return apierr.New(connect.CodeFailedPrecondition, ReasonObjectTableExists,
			"the environment's database has a table "+next.Name+" that no definition describes (left by an earlier "+
				"delete that did not finish, or made by hand); drop it with DeleteObject and force, or take it over "+
				"with repair REPAIR_ADOPT (its columns must match)", "object", next.Name)
	case errors.Is(err, driver.ErrUnavailable):
		return s.databaseError(ctx, err)
	}
	if known := dberror.Error(err); known != nil {
		return known
	}
	log.Warn("migration failed; the previous definition stays in place",
		"environment_id", environmentID, "object", next.Name, "version", next.Version)
	log.Debug("migration failure cause", "error", err)
	msg := "the environment's database refused the change; nothing was changed"
	for _, st := range steps {
		if (st.Kind == schema.StepAddIndex && st.Index != nil && st.Index.Unique) ||
			(st.Kind == schema.StepChangeField && st.Field != nil && st.Field.Unique) {
			msg = "the environment's database refused the change (a unique index over duplicate values?); nothing was changed"
			break
		}
	}
	return apierr.New(connect.CodeFailedPrecondition, ReasonMigrationFailed, msg)
}

// checkRequiredFields refuses a new required field without a default on an
// object that has records: those records would break the rule at once.
func (s *Service) checkRequiredFields(ctx context.Context, lease *registry.Lease, current *schema.Object, steps []schema.Step) error {
	for _, st := range steps {
		if st.Kind != schema.StepAddField || st.Field == nil || !st.Field.Required || st.Field.Default != nil {
			continue
		}
		n, err := lease.Driver.Count(ctx, current, nil)
		if err != nil {
			return s.databaseError(ctx, err)
		}
		if n > 0 {
			return apierr.New(connect.CodeFailedPrecondition, ReasonRequiredFieldNeedsDefault,
				"field "+st.Field.Name+" is required and the object has records: give it a default_value", "field", st.Field.Name)
		}
	}
	return nil
}

// GetObject implements MetadataService.GetObject.
func (s *Service) GetObject(ctx context.Context, req *connect.Request[metadatav1.GetObjectRequest]) (*connect.Response[metadatav1.GetObjectResponse], error) {
	env, _ := resolve.From(ctx)
	lease := s.tryAcquire(ctx, env.ID)
	if lease != nil {
		defer lease.Release()
	}
	obj, err := s.current(ctx, env.ID, req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, notDefined(req.Msg.GetName())
	}
	p := objects.ToProto(obj)
	if lease != nil {
		p.Drift = driftOf(lease, obj)
	}
	return connect.NewResponse(&metadatav1.GetObjectResponse{Object: p}), nil
}

// tryAcquire opens the environment's database for a read of definitions,
// which shows drift: opening reconciles, so the definitions read after it
// are the ones the database holds. nil when it cannot be opened: the
// definitions still answer, without drift (data calls say why).
func (s *Service) tryAcquire(ctx context.Context, environmentID string) *registry.Lease {
	lease, err := s.registry.Acquire(ctx, environmentID)
	if err != nil {
		reqlog.Logger(ctx, s.log).Debug("definitions read without their database", "environment_id", environmentID, "error", err)
		return nil
	}
	return lease
}

// driftOf is why obj's table does not hold obj, as the lease's database
// found at its open; "" when it does.
func driftOf(lease *registry.Lease, obj *schema.Object) string {
	if g, ok := lease.Driver.(interface{ Drift(*schema.Object) string }); ok {
		return g.Drift(obj)
	}
	return ""
}

// ListObjects implements MetadataService.ListObjects.
func (s *Service) ListObjects(ctx context.Context, req *connect.Request[metadatav1.ListObjectsRequest]) (*connect.Response[metadatav1.ListObjectsResponse], error) {
	env, _ := resolve.From(ctx)
	after, err := pagetoken.Decode(req.Msg.GetPageToken(), "objects", env.ID)
	if err != nil {
		return nil, apierr.InvalidArgument(ReasonInvalidPageToken, err.Error(),
			apierr.FieldViolation{Field: "page_token", Description: err.Error()})
	}
	size := pagetoken.Size(req.Msg.GetPageSize())
	lease := s.tryAcquire(ctx, env.ID)
	if lease != nil {
		defer lease.Release()
	}
	defs, err := s.store.ListObjectDefinitions(ctx, env.ID, controlplane.Page{After: after, Limit: size + 1})
	if err != nil {
		return nil, s.internal(ctx, err)
	}
	resp := &metadatav1.ListObjectsResponse{}
	if len(defs) > size {
		defs = defs[:size]
		resp.NextPageToken = pagetoken.Encode(defs[size-1].Name, "objects", env.ID)
	}
	objs := make([]*schema.Object, 0, len(defs))
	for _, d := range defs {
		obj, err := objects.Decode(d)
		if err != nil {
			return nil, s.internal(ctx, err)
		}
		objs = append(objs, obj)
		resp.Objects = append(resp.Objects, objects.ToProto(obj))
	}
	if lease != nil {
		for i, obj := range objs {
			resp.Objects[i].Drift = driftOf(lease, obj)
		}
	}
	return connect.NewResponse(resp), nil
}

// DeleteObject implements MetadataService.DeleteObject.
func (s *Service) DeleteObject(ctx context.Context, req *connect.Request[metadatav1.DeleteObjectRequest]) (*connect.Response[metadatav1.DeleteObjectResponse], error) {
	env, _ := resolve.From(ctx)
	if err := auth.From(ctx).RequireRole(auth.RoleDeveloper); err != nil {
		return nil, err
	}
	name := req.Msg.GetName()
	unlock, err := s.changes.lock(ctx, env.ID+"/"+name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// The database opens first: opening reconciles, and may finish a
	// delete that a crash interrupted.
	lease, err := s.registry.Acquire(ctx, env.ID)
	if err != nil {
		return nil, s.databaseError(ctx, err)
	}
	defer lease.Release()
	obj, err := s.current(ctx, env.ID, name)
	if err != nil {
		return nil, err
	}
	if obj == nil {
		return s.dropOrphan(ctx, lease, env.ID, name, req.Msg.GetForce())
	}
	if !req.Msg.GetForce() {
		n, err := lease.Driver.Count(ctx, obj, filter.Expr(nil))
		if err != nil {
			return nil, s.databaseError(ctx, err)
		}
		if n > 0 {
			return nil, apierr.New(connect.CodeFailedPrecondition, ReasonObjectHasRecords,
				"the object has records; delete them or pass force to drop the table with them", "object", name)
		}
	}
	// The table goes first, with a tombstone in the ledger in the same
	// transaction; then the definition. A failure of the first changes
	// nothing; a crash between them leaves the tombstone, from which the
	// next open of the database removes the definition (see Reconciler),
	// and a retry of this call does too: the delete finishes, or nothing
	// of it happened.
	if err := lease.Driver.DropObject(context.WithoutCancel(ctx), name); err != nil {
		return nil, s.databaseError(ctx, err)
	}
	if err := s.store.DeleteObjectDefinition(context.WithoutCancel(ctx), env.ID, name); err != nil && !errors.Is(err, controlplane.ErrNotFound) {
		// The table is gone and its tombstone says so: reopening the
		// database removes the definition, and a retry of this call does.
		s.registry.Invalidate(env.ID)
		reqlog.Logger(ctx, s.log).Error("removing a dropped object's definition failed", "environment_id", env.ID, "object", name, "error", err)
		return nil, notRecorded(err, "the object's table is dropped and its definition could not be removed now; "+
			"the delete finishes when the database is next opened, and a retry converges")
	}
	s.publish(ctx, env.ID, name)
	reqlog.Logger(ctx, s.log).Info("object deleted", "environment_id", env.ID, "object", name)
	return connect.NewResponse(&metadatav1.DeleteObjectResponse{}), nil
}

// dropOrphan deletes an object that has no definition: with force, a table
// (or ledger entry) of the name that the database holds without one is
// dropped; otherwise, or when there is nothing, the object is not defined.
func (s *Service) dropOrphan(ctx context.Context, lease *registry.Lease, environmentID, name string, force bool) (*connect.Response[metadatav1.DeleteObjectResponse], error) {
	if !force {
		return nil, notDefined(name)
	}
	// Only a table envplane made goes: one the ledger holds, or, in a
	// database envplane made, one with every system column of envplane's
	// types (what Check of a bare object asks), left by an envplane older
	// than the ledger. The tables of a database brought by its user are
	// its own: only the ledger speaks for them.
	made := false
	if env, _ := resolve.From(ctx); !env.ExternalDatabase {
		switch err := lease.Driver.Check(ctx, &schema.Object{Name: name}); {
		case err == nil:
			made = true
		case errors.Is(err, driver.ErrSchemaDrift):
		default:
			return nil, s.databaseError(ctx, err)
		}
	}
	// The ledger is read after Check: a table Check found was committed
	// with its ledger entry, so the entry is seen too. A live entry is a
	// change whose definition is not stored yet (another replica's, in
	// flight, or one a crash cut short, which reopening the database
	// stores); dropping its table could undo a change acknowledged a
	// moment later: reconcile, and let the caller retry.
	entries, err := lease.Driver.Ledger(ctx)
	if err != nil && !errors.Is(err, driver.ErrNoLedger) {
		return nil, s.databaseError(ctx, err)
	}
	for _, e := range entries {
		if e.Object != name || e.Version == 0 {
			continue
		}
		if obj, err := fromLedger(e); err == nil && !reservedObject(obj) {
			s.registry.Invalidate(environmentID)
			return nil, apierr.New(connect.CodeAborted, ReasonConcurrentModification,
				"a change of object "+name+" is being stored; retry the delete (it then drops the object, definition and table together)",
				"object", name)
		}
		made = true // an entry reconciling leaves undefined: the ledger speaks for the table
	}
	if !made {
		return nil, notDefined(name)
	}
	if err := lease.Driver.DropObject(context.WithoutCancel(ctx), name); err != nil {
		return nil, s.databaseError(ctx, err)
	}
	reqlog.Logger(ctx, s.log).Warn("dropped a table no definition described", "environment_id", environmentID, "object", name)
	return connect.NewResponse(&metadatav1.DeleteObjectResponse{}), nil
}

// current reads the stored definition straight from the control plane
// (writes must not act on a cached copy); nil when not defined.
func (s *Service) current(ctx context.Context, environmentID, name string) (*schema.Object, error) {
	def, err := s.store.GetObjectDefinition(ctx, environmentID, name)
	if errors.Is(err, controlplane.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, s.internal(ctx, err)
	}
	obj, err := objects.Decode(def)
	if err != nil {
		return nil, s.internal(ctx, err)
	}
	return obj, nil
}

func (s *Service) publish(ctx context.Context, environmentID, name string) {
	if err := s.events.Publish(ctx, invalidate.Event{Kind: invalidate.KindObject, EnvironmentID: environmentID, Object: name}); err != nil {
		reqlog.Logger(ctx, s.log).Error("publishing a definition change failed; caches stay stale until their TTL", "error", err)
	}
}

// notRecorded is the error of a change the environment's database made
// and the control plane could not record: never "nothing was written"
// (the reconcile at the next open records it), but why, and that a retry
// converges. A full control plane stays RESOURCE_EXHAUSTED STORAGE_FULL.
func notRecorded(err error, done string) error {
	if errors.Is(err, controlplane.ErrStorageFull) {
		return apierr.New(connect.CodeResourceExhausted, dberror.ReasonStorageFull, "the control plane's storage is full: "+done)
	}
	return apierr.New(connect.CodeUnavailable, apierr.ReasonControlPlaneUnavailable, "the control plane failed: "+done)
}

func notDefined(name string) error {
	return apierr.New(connect.CodeNotFound, ReasonObjectNotDefined, "the environment has no object "+name, "object", name)
}

func (s *Service) databaseError(ctx context.Context, err error) error {
	env, _ := resolve.From(ctx)
	if known := dberror.Classify(ctx, s.envs, env.ID, err, reqlog.Logger(ctx, s.log)); known != nil {
		return known
	}
	reqlog.Logger(ctx, s.log).Warn("environment database unavailable")
	reqlog.Logger(ctx, s.log).Debug("environment database failure cause", "error", err)
	return apierr.New(connect.CodeUnavailable, ReasonDatabaseUnavailable, "the environment's database cannot be reached now; retry")
}

func (s *Service) internal(ctx context.Context, err error) error {
	env, _ := resolve.From(ctx)
	if known := dberror.Classify(ctx, s.envs, env.ID, err, reqlog.Logger(ctx, s.log)); known != nil {
		return known
	}
	reqlog.Logger(ctx, s.log).Error("metadata service failed", "error", err)
	return apierr.Internal()
}

// keyedLock is a mutex per key, taken with a context. It serializes within
// this process only; the version check of the store still refuses the
// loser of a race between replicas.
type keyedLock struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	sem  chan struct{}
	refs int // holders and waiters
}

// lock takes key's lock, or gives up when ctx ends; unlock releases it.
func (k *keyedLock) lock(ctx context.Context, key string) (unlock func(), err error) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = make(map[string]*keyLock)
	}
	l := k.locks[key]
	if l == nil {
		l = &keyLock{sem: make(chan struct{}, 1)}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	release := func() {
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
	select {
	case l.sem <- struct{}{}:
		return func() {
			<-l.sem
			release()
		}, nil
	case <-ctx.Done():
		release()
		code := connect.CodeCanceled
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			code = connect.CodeDeadlineExceeded
		}
		return nil, apierr.New(code, ReasonChangeInProgress, "gave up waiting for another change of the object to finish")
	}
}
