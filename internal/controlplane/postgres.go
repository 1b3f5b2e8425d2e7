package controlplane

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// postgresMigrations holds the PostgreSQL schema, applied by OpenPostgres.
//
//go:embed migrations/postgres/*.sql
var postgresMigrations embed.FS

// postgresMigrationsDir is the folder of postgresMigrations the runner reads.
const postgresMigrationsDir = "migrations/postgres"

// postgresMigrationLock is the advisory lock key that serialises migration
// runs on one database, so replicas starting together never race to create
// the same table. Advisory locks are scoped to the current database, so one
// constant key serves every database on a server. The value spells
// "envplane" in ASCII.
const postgresMigrationLock int64 = 0x656e76706c616e65

// postgresHostnameCheckLock is the advisory lock key of LockHostnameChecks:
// "envplhck" in ASCII.
const postgresHostnameCheckLock int64 = 0x656e76706c68636b

// postgresMaxAttempts bounds how often a write that lost a race to a
// concurrent writer (a default flag taken meanwhile, a serialization failure
// or deadlock, a request id whose row vanished before it could be read back)
// is tried again before its error is returned.
const postgresMaxAttempts = 10

// PostgreSQL error codes the store tells apart (Appendix A of its manual).
const (
	pgUniqueViolation      = "23505"
	pgForeignKeyViolation  = "23503"
	pgSerializationFailure = "40001"
	pgDeadlockDetected     = "40P01"
)

// Names of the constraints and unique indexes in migrations/postgres whose
// violations the store maps to sentinel errors or retries. PostgreSQL
// reports the name with the violation; the schema names each one explicitly
// so these stay stable.
const (
	pgOrganizationsSlugKey         = "organizations_slug_key"
	pgOrganizationsRequestIDKey    = "organizations_request_id_key"
	pgEnvironmentsHostnameKey      = "environments_verified_hostname"
	pgEnvironmentsSlugKey          = "environments_organization_id_slug_key"
	pgEnvironmentsRequestIDIndex   = "environments_organization_request_id"
	pgEnvironmentsDefaultIndex     = "environments_organization_default"
	pgEnvironmentsOrganizationFKey = "environments_organization_id_fkey"
	pgTokensRequestIDIndex         = "tokens_organization_request_id"
	pgTokensOrganizationFKey       = "tokens_organization_id_fkey"
	pgTokensActiveEnvironmentFKey  = "tokens_active_environment_id_fkey"

	pgObjectDefinitionsPKey            = "object_definitions_pkey"
	pgObjectDefinitionsEnvironmentFKey = "object_definitions_environment_id_fkey"
	pgObjectMigrationsPKey             = "object_migrations_pkey"
	pgObjectMigrationsDefinitionFKey   = "object_migrations_definition_fkey"
)

// pgConstraintNames lists every name above, so a test can check each one
// exists in the migrated schema and a renamed constraint cannot silently turn
// a sentinel error into an unexpected one.
var pgConstraintNames = []string{
	pgOrganizationsSlugKey, pgOrganizationsRequestIDKey, pgEnvironmentsHostnameKey,
	pgEnvironmentsSlugKey, pgEnvironmentsRequestIDIndex, pgEnvironmentsDefaultIndex,
	pgEnvironmentsOrganizationFKey, pgTokensRequestIDIndex, pgTokensOrganizationFKey,
	pgTokensActiveEnvironmentFKey, pgObjectDefinitionsPKey, pgObjectDefinitionsEnvironmentFKey,
	pgObjectMigrationsPKey, pgObjectMigrationsDefinitionFKey,
}

// Postgres is the Store on a PostgreSQL database, for control planes that
// run more than one replica. It is safe for concurrent use by any number of
// goroutines and processes: uniqueness and the single default per
// organization are enforced by the schema, and every path that can lose a
// race to another writer either reads the winner back (request ids) or tries
// again a bounded number of times (default flags), instead of relying on
// serialized writers as the SQLite store does.
type Postgres struct {
	pool *pgxpool.Pool
	// now is the clock of the times the store sets itself (UpdateTime).
	now func() time.Time
}

var _ Store = (*Postgres)(nil)

// OpenPostgres connects to the database at url (a postgres:// URL or a
// keyword/value connection string, as pgx parses them), checks it answers and
// applies the pending migrations under an advisory lock, so several replicas
// may open the same database at once and the returned store is ready to use.
// Close it when done.
func OpenPostgres(ctx context.Context, url string) (*Postgres, error) {
	if url == "" {
		return nil, errors.New("controlplane: open postgres: empty url")
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx quotes the string with the password masked only as far as
		// it can tell where the password is in malformed input, so none
		// of it goes into the error.
		return nil, errors.New("controlplane: open postgres: malformed connection string")
	}
	// The store's answers to concurrent writers (reading the winner back,
	// retrying a lost default flag, row locks re-checked on the latest
	// version) are those of READ COMMITTED; pinning it keeps a server or
	// role default of REPEATABLE READ or SERIALIZABLE from turning lost
	// races into serialization failures in statements that do not retry.
	cfg.ConnConfig.RuntimeParams["default_transaction_isolation"] = "read committed"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("controlplane: open postgres: %w", err)
	}
	s := &Postgres{pool: pool, now: time.Now}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("controlplane: open postgres: %w", err)
	}
	if _, err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// migrate applies the pending migrations with the generic runner. The runner
// takes a *sql.DB; this one is a single dedicated connection outside the
// pool, so the session-level advisory lock taken first covers every
// statement of the run, a pool of any size cannot starve it, and closing it
// ends the session, which releases the lock even when unlocking fails.
func (s *Postgres) migrate(ctx context.Context) ([]int, error) {
	db := stdlib.OpenDB(*s.pool.Config().ConnConfig)
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	defer func() { _ = db.Close() }()
	if _, err := db.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, postgresMigrationLock); err != nil {
		return nil, fmt.Errorf("controlplane: migrate: take the migration lock: %w", err)
	}
	applied, err := migrate(ctx, db, postgresMigrations, postgresMigrationsDir, dollarSign)
	// Closing the connection releases the lock too, so a failed unlock
	// (a cancelled ctx) changes nothing for the other replicas.
	_, _ = db.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, postgresMigrationLock)
	return applied, err
}

// dollarSign is the placeholder style of PostgreSQL.
func dollarSign(n int) string { return "$" + strconv.Itoa(n) }

// Ping checks that the database answers.
func (s *Postgres) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("controlplane: ping postgres: %w", err)
	}
	return nil
}

// Close closes the connection pool, waiting for connections in use to be
// given back.
func (s *Postgres) Close() error {
	s.pool.Close()
	return nil
}

// CreateOrganization implements Store. The request id is looked up first; a
// concurrent create with the same id that commits between that look-up and
// the insert makes the insert fail on a unique index (whichever the retry
// trips first, its slug being taken too), and the winner is then read back
// and compared, so concurrent retries of one create make one organization
// and all get it.
func (s *Postgres) CreateOrganization(ctx context.Context, org Organization) (Organization, bool, error) {
	op := "create organization " + strconv.Quote(org.Slug)
	org.CreateTime, org.UpdateTime = pgTime(org.CreateTime), pgTime(org.UpdateTime)
	if org.RequestID != "" {
		if prev, found, err := s.organizationByRequest(ctx, org); found || err != nil {
			return prev, false, wrapErrIf(op, err)
		}
	}
	for attempt := 1; ; attempt++ {
		stored, err := scanPgOrganization(s.pool.QueryRow(ctx, `INSERT INTO organizations
			(id, slug, display_name, request_id, create_time, update_time, request_digest)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			RETURNING `+organizationColumns,
			org.ID, org.Slug, org.DisplayName, nullString(org.RequestID), org.CreateTime, org.UpdateTime,
			nullString(org.RequestDigest)))
		if err == nil {
			return stored, true, nil
		}
		if org.RequestID != "" && pgCode(err) == pgUniqueViolation {
			if prev, found, err := s.organizationByRequest(ctx, org); found || err != nil {
				return prev, false, wrapErrIf(op, err)
			}
		}
		switch {
		case pgViolates(err, pgUniqueViolation, pgOrganizationsRequestIDKey) && attempt < postgresMaxAttempts:
			continue // the winner is gone before it could be read back
		case pgViolates(err, pgUniqueViolation, pgOrganizationsSlugKey):
			err = ErrOrganizationExists
		}
		return Organization{}, false, wrapErr(op, err)
	}
}

// organizationByRequest finds the organization created with org.RequestID:
// found is false when there is none, and the error is ErrRequestReused when
// it was created with other content.
func (s *Postgres) organizationByRequest(ctx context.Context, org Organization) (Organization, bool, error) {
	prev, err := scanPgOrganization(s.pool.QueryRow(ctx,
		`SELECT `+organizationColumns+` FROM organizations WHERE request_id = $1`, org.RequestID))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Organization{}, false, nil
	case err != nil:
		return Organization{}, false, err
	case !sameOrganizationRequest(prev, org):
		return Organization{}, true, ErrRequestReused
	}
	return prev, true, nil
}

// GetOrganization implements Store.
func (s *Postgres) GetOrganization(ctx context.Context, id string) (Organization, error) {
	org, err := scanPgOrganization(s.pool.QueryRow(ctx,
		`SELECT `+organizationColumns+` FROM organizations WHERE id = $1`, id))
	if err != nil {
		return Organization{}, wrapErr("get organization "+strconv.Quote(id), err)
	}
	return org, nil
}

// ListOrganizations implements Store.
func (s *Postgres) ListOrganizations(ctx context.Context, page Page) ([]Organization, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+organizationColumns+` FROM organizations
		WHERE id > $1 ORDER BY id LIMIT $2`, page.After, pageLimit(page))
	out, err := collectPg(rows, err, scanPgOrganization)
	if err != nil {
		return nil, wrapErr("list organizations", err)
	}
	return out, nil
}

// CreateEnvironment implements Store. PostgreSQL runs creates side by side,
// so the mode is made to hold against concurrent writers rather than by
// serializing them:
//
//   - DefaultIfFirst decides in the INSERT itself whether the organization
//     has a default. Two creates can both see none; the partial unique index
//     lets one of them in and refuses the other, which is tried again as
//     DefaultNo: a concurrent create won, and it still succeeds without the
//     flag, as documented.
//   - DefaultYes locks the organization row (FOR NO KEY UPDATE, which plain
//     inserts referencing it do not wait for), clears the old default and
//     inserts in one transaction, so default moves queue behind each other.
//     It can still collide with a DefaultIfFirst create that saw no default,
//     or fail to serialize; then the whole transaction is tried again, a
//     bounded number of times.
//
// A request id already used in the organization is answered from the stored
// row, including when a concurrent retry inserted it first.
func (s *Postgres) CreateEnvironment(ctx context.Context, env Environment, mode DefaultMode) (Environment, bool, error) {
	op := "create environment " + strconv.Quote(env.Slug)
	if mode != DefaultIfFirst && mode != DefaultYes && mode != DefaultNo {
		return Environment{}, false, fmt.Errorf("controlplane: %s: unknown default mode %d", op, mode)
	}
	env.CreateTime, env.UpdateTime = pgTime(env.CreateTime), pgTime(env.UpdateTime)
	env.ProvisionTime = pgTime(env.ProvisionTime)
	if env.RequestID != "" {
		if prev, found, err := s.environmentByRequest(ctx, env); found || err != nil {
			return prev, false, wrapErrIf(op, err)
		}
	}
	for attempt := 1; ; attempt++ {
		stored, err := s.insertEnvironment(ctx, env, mode)
		if err == nil {
			return stored, true, nil
		}
		// A concurrent retry of this very request may have won, tripping
		// whichever unique rule first (slug, hostname, request id, default).
		if env.RequestID != "" && pgCode(err) == pgUniqueViolation {
			if prev, found, err := s.environmentByRequest(ctx, env); found || err != nil {
				return prev, false, wrapErrIf(op, err)
			}
		}
		retry := attempt < postgresMaxAttempts
		switch {
		case pgViolates(err, pgUniqueViolation, pgEnvironmentsDefaultIndex) && mode == DefaultIfFirst:
			mode = DefaultNo // a concurrent create took the default first
			continue
		case pgViolates(err, pgUniqueViolation, pgEnvironmentsDefaultIndex) && retry,
			pgViolates(err, pgUniqueViolation, pgEnvironmentsRequestIDIndex) && retry, // winner gone
			pgRetryable(err) && retry:
			continue
		case pgViolates(err, pgUniqueViolation, pgEnvironmentsHostnameKey):
			// Hostnames are unique across organizations, so the insert can
			// trip on one before its foreign key is checked at the end of
			// the statement; a missing organization is the first error.
			err = ErrHostnameTaken
			if exists, xerr := s.organizationExists(ctx, env.OrganizationID); xerr != nil {
				err = xerr
			} else if !exists {
				err = ErrOrganizationMissing
			}
		case pgViolates(err, pgUniqueViolation, pgEnvironmentsSlugKey):
			err = ErrEnvironmentExists
		case pgViolates(err, pgForeignKeyViolation, pgEnvironmentsOrganizationFKey):
			err = ErrOrganizationMissing
		}
		return Environment{}, false, wrapErr(op, err)
	}
}

// insertEnvironmentSQL inserts one environment; $9 is the default flag, NULL
// meaning "if the organization has none", decided inside the statement.
const insertEnvironmentSQL = `INSERT INTO environments
	(id, organization_id, slug, display_name, type, driver, status, status_message,
	 is_default, hostname, region, storage_limit_mb, database_url, request_id,
	 create_time, update_time, provision_time, external_database,
	 credential_key_id, credential_ciphertext, credential_rotate_time, request_digest,
	 resources_may_exist, hostname_state, hostname_next_check, hostname_proof)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
	 coalesce($9::boolean, NOT EXISTS (SELECT 1 FROM environments
		WHERE organization_id = $2 AND is_default)),
	 $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)
	RETURNING ` + environmentColumns

// insertEnvironment runs one attempt of CreateEnvironment's insert for mode.
func (s *Postgres) insertEnvironment(ctx context.Context, env Environment, mode DefaultMode) (Environment, error) {
	keyID, ciphertext, rotateTime := pgCredential(env.Credential)
	insert := func(q pgxQuerier, isDefault *bool) (Environment, error) {
		return scanPgEnvironment(q.QueryRow(ctx, insertEnvironmentSQL,
			env.ID, env.OrganizationID, env.Slug, env.DisplayName, env.Type, env.Driver,
			env.Status, env.StatusMessage, isDefault, env.Hostname, env.Region,
			env.StorageLimitMB, env.DatabaseURL, nullString(env.RequestID),
			env.CreateTime, env.UpdateTime, pgNullTime(env.ProvisionTime),
			env.ExternalDatabase, keyID, ciphertext, rotateTime, nullString(env.RequestDigest),
			env.ResourcesMayExist, proofState(env.Proof), pgNullTime(pgTime(env.Proof.NextCheckTime)),
			encodeProof(env.Proof)))
	}
	switch mode {
	case DefaultNo:
		no := false
		return insert(s.pool, &no)
	case DefaultIfFirst:
		return insert(s.pool, nil)
	}
	var stored Environment
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockOrganization(ctx, tx, env.OrganizationID); err != nil {
			return err
		}
		if err := s.clearDefault(ctx, tx, env.OrganizationID); err != nil {
			return err
		}
		yes := true
		var err error
		stored, err = insert(tx, &yes)
		return err
	})
	return stored, err
}

// pgxQuerier is what a pool and a transaction share for single-row queries.
type pgxQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// lockOrganization locks the organization row for the rest of tx so that
// moves of its default flag queue behind each other. FOR NO KEY UPDATE does
// not conflict with the FOR KEY SHARE locks that inserting environments or
// tokens of the organization take, so only default moves wait. A missing
// organization is ErrOrganizationMissing.
func lockOrganization(ctx context.Context, tx pgx.Tx, organizationID string) error {
	var one int
	err := tx.QueryRow(ctx, `SELECT 1 FROM organizations WHERE id = $1 FOR NO KEY UPDATE`,
		organizationID).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrOrganizationMissing
	}
	return err
}

// organizationExists reports whether the organization is there, for the
// error paths that must tell a missing organization from another failure.
func (s *Postgres) organizationExists(ctx context.Context, id string) (bool, error) {
	var exists bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1)`, id).Scan(&exists)
	return exists, err
}

// clearDefault takes the default flag off the organization's default
// environment, if it has one, as the first half of moving the flag inside tx.
func (s *Postgres) clearDefault(ctx context.Context, tx pgx.Tx, organizationID string) error {
	_, err := tx.Exec(ctx, `UPDATE environments SET is_default = false, update_time = $1
		WHERE organization_id = $2 AND is_default`, pgTime(s.now()), organizationID)
	return err
}

// environmentByRequest finds the environment created in env's organization
// with env.RequestID: found is false when there is none, and the error is
// ErrRequestReused when it was created with other content.
func (s *Postgres) environmentByRequest(ctx context.Context, env Environment) (Environment, bool, error) {
	prev, err := scanPgEnvironment(s.pool.QueryRow(ctx, `SELECT `+environmentColumns+` FROM environments
		WHERE organization_id = $1 AND request_id = $2`, env.OrganizationID, env.RequestID))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Environment{}, false, nil
	case err != nil:
		return Environment{}, false, err
	case !sameEnvironmentRequest(prev, env):
		return Environment{}, true, ErrRequestReused
	}
	return prev, true, nil
}

// GetEnvironment implements Store.
func (s *Postgres) GetEnvironment(ctx context.Context, id string) (Environment, error) {
	env, err := scanPgEnvironment(s.pool.QueryRow(ctx,
		`SELECT `+environmentColumns+` FROM environments WHERE id = $1`, id))
	if err != nil {
		return Environment{}, wrapErr("get environment "+strconv.Quote(id), err)
	}
	return env, nil
}

// GetEnvironmentByHostname implements Store.
func (s *Postgres) GetEnvironmentByHostname(ctx context.Context, hostname string) (Environment, error) {
	env, err := scanPgEnvironment(s.pool.QueryRow(ctx,
		`SELECT `+environmentColumns+` FROM environments WHERE hostname = $1 AND hostname_state = 'verified'`, hostname))
	if err != nil {
		return Environment{}, wrapErr("get environment by hostname "+strconv.Quote(hostname), err)
	}
	return env, nil
}

// ListHostnameClaims implements Store.
func (s *Postgres) ListHostnameClaims(ctx context.Context, hostname string) ([]Environment, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+environmentColumns+` FROM environments
		WHERE hostname = $1 ORDER BY id LIMIT $2`, hostname, maxPageLimit)
	out, err := collectPg(rows, err, scanPgEnvironment)
	if err != nil {
		return nil, wrapErr("list the claims of hostname "+strconv.Quote(hostname), err)
	}
	return out, nil
}

// ListHostnameChecks implements Store.
func (s *Postgres) ListHostnameChecks(ctx context.Context, due time.Time, limit int) ([]Environment, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+environmentColumns+` FROM environments
		WHERE hostname_next_check IS NOT NULL AND hostname_next_check <= $1
		ORDER BY hostname_next_check, id LIMIT $2`, pgTime(due), pageLimit(Page{Limit: limit}))
	out, err := collectPg(rows, err, scanPgEnvironment)
	if err != nil {
		return nil, wrapErr("list due hostname checks", err)
	}
	return out, nil
}

// LockHostnameChecks implements Store with a session-level advisory lock on
// a connection of its own, held until release: one replica at a time runs
// the checks, and a replica that dies releases the lock with its session.
func (s *Postgres) LockHostnameChecks(ctx context.Context) (func(), bool, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, false, wrapErr("lock hostname checks", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, postgresHostnameCheckLock).Scan(&ok); err != nil {
		conn.Release()
		return nil, false, wrapErr("lock hostname checks", err)
	}
	if !ok {
		conn.Release()
		return nil, false, nil
	}
	release := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, postgresHostnameCheckLock); err != nil {
			// The session may still hold the lock: end it, which releases it.
			_ = conn.Conn().Close(ctx)
		}
		conn.Release()
	}
	return release, true, nil
}

// ListEnvironments implements Store. An organization that does not exist has
// no environments, so it yields an empty page rather than an error.
func (s *Postgres) ListEnvironments(ctx context.Context, organizationID string, page Page) ([]Environment, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+environmentColumns+` FROM environments
		WHERE organization_id = $1 AND id > $2 ORDER BY id LIMIT $3`,
		organizationID, page.After, pageLimit(page))
	out, err := collectPg(rows, err, scanPgEnvironment)
	if err != nil {
		return nil, wrapErr("list environments of "+strconv.Quote(organizationID), err)
	}
	return out, nil
}

// UpdateEnvironment implements Store. The row is locked (FOR UPDATE) while
// the patch is applied, so concurrent patches of one environment do not lose
// each other's fields. A patch that makes the environment the default first
// locks its organization, in the same order as CreateEnvironment with
// DefaultYes, so moves of the flag queue instead of deadlocking; when a
// concurrent DefaultIfFirst create takes the flag meanwhile, or the
// transaction fails to serialize, it is tried again a bounded number of
// times. A taken hostname rolls everything back.
func (s *Postgres) UpdateEnvironment(ctx context.Context, id string, patch EnvironmentPatch) (Environment, error) {
	op := "update environment " + strconv.Quote(id)
	movesDefault := patch.IsDefault != nil && *patch.IsDefault
	for attempt := 1; ; attempt++ {
		var stored Environment
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if movesDefault {
				var organizationID string
				if err := tx.QueryRow(ctx, `SELECT organization_id FROM environments WHERE id = $1`,
					id).Scan(&organizationID); err != nil {
					return err
				}
				if err := lockOrganization(ctx, tx, organizationID); err != nil {
					return err
				}
			}
			cur, err := scanPgEnvironment(tx.QueryRow(ctx,
				`SELECT `+environmentColumns+` FROM environments WHERE id = $1 FOR UPDATE`, id))
			if err != nil {
				return err
			}
			// The row lock makes the check and the write one step: a
			// concurrent conditional patch waits here, then reads the
			// status this one wrote.
			if patch.mismatches(cur) {
				stored = cur
				return ErrStatusMismatch
			}
			if patch.hostnameMoved(cur) {
				stored = cur
				return ErrHostnameMoved
			}
			next := cur
			setIf(&next.Hostname, patch.Hostname)
			setIf(&next.Proof, patch.Proof)
			setIf(&next.DisplayName, patch.DisplayName)
			setIf(&next.IsDefault, patch.IsDefault)
			setIf(&next.Status, patch.Status)
			setIf(&next.StatusMessage, patch.StatusMessage)
			setIf(&next.Region, patch.Region)
			setIf(&next.StorageLimitMB, patch.StorageLimitMB)
			setIf(&next.DatabaseURL, patch.DatabaseURL)
			setIf(&next.ProvisionTime, patch.ProvisionTime)
			setIf(&next.Credential, patch.Credential)
			setIf(&next.ResourcesMayExist, patch.ResourcesMayExist)
			if next.IsDefault && !cur.IsDefault {
				if err := s.clearDefault(ctx, tx, cur.OrganizationID); err != nil {
					return err
				}
			}
			now := pgTime(s.now())
			if patch.TakeHostname && next.Proof.Routes() {
				if err := takePgHostname(ctx, tx, next.Hostname, id, now); err != nil {
					return err
				}
			}
			keyID, ciphertext, rotateTime := pgCredential(next.Credential)
			stored, err = scanPgEnvironment(tx.QueryRow(ctx, `UPDATE environments SET
				hostname = $1, display_name = $2, is_default = $3, status = $4, status_message = $5,
				region = $6, storage_limit_mb = $7, database_url = $8, provision_time = $9,
				update_time = $10, credential_key_id = $11, credential_ciphertext = $12,
				credential_rotate_time = $13, resources_may_exist = $14, hostname_state = $15,
				hostname_next_check = $16, hostname_proof = $17
				WHERE id = $18
				RETURNING `+environmentColumns,
				next.Hostname, next.DisplayName, next.IsDefault, next.Status, next.StatusMessage,
				next.Region, next.StorageLimitMB, next.DatabaseURL, pgNullTime(pgTime(next.ProvisionTime)),
				now, keyID, ciphertext, rotateTime, next.ResourcesMayExist, proofState(next.Proof),
				pgNullTime(pgTime(next.Proof.NextCheckTime)), encodeProof(next.Proof), id))
			return err
		})
		if err == nil {
			return stored, nil
		}
		if errors.Is(err, ErrStatusMismatch) || errors.Is(err, ErrHostnameMoved) {
			return stored, wrapErr(op, err)
		}
		// A take that raced another take finds the winner holding the
		// hostname verified: taking it from the winner is what a second try
		// does.
		if attempt < postgresMaxAttempts &&
			(pgViolates(err, pgUniqueViolation, pgEnvironmentsDefaultIndex) || pgRetryable(err) ||
				patch.TakeHostname && pgViolates(err, pgUniqueViolation, pgEnvironmentsHostnameKey)) {
			continue
		}
		if pgViolates(err, pgUniqueViolation, pgEnvironmentsHostnameKey) {
			err = ErrHostnameTaken
		}
		return Environment{}, wrapErr(op, err)
	}
}

// takePgHostname moves the claim of the environment other than id that
// holds hostname verified, if any, back to pending inside tx, so that id can
// hold it verified. The row lock orders it with a concurrent take.
func takePgHostname(ctx context.Context, tx pgx.Tx, hostname, id string, now time.Time) error {
	holder, err := scanPgEnvironment(tx.QueryRow(ctx, `SELECT `+environmentColumns+` FROM environments
		WHERE hostname = $1 AND hostname_state = 'verified' AND id <> $2 FOR UPDATE`, hostname, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	p := demoted(holder.Proof, now)
	_, err = tx.Exec(ctx, `UPDATE environments SET hostname_state = $1, hostname_next_check = $2,
		hostname_proof = $3, update_time = $4 WHERE id = $5`,
		p.State, pgNullTime(pgTime(p.NextCheckTime)), encodeProof(p), now, holder.ID)
	return err
}

// DeleteEnvironment implements Store. Tokens whose session had it active
// lose it through the foreign key's ON DELETE SET NULL.
func (s *Postgres) DeleteEnvironment(ctx context.Context, id string) error {
	op := "delete environment " + strconv.Quote(id)
	tag, err := s.pool.Exec(ctx, `DELETE FROM environments WHERE id = $1`, id)
	if err := wantOneRowPg(tag, err); err != nil {
		return wrapErr(op, err)
	}
	return nil
}

// scanPgOrganization reads one organizations row selected with
// organizationColumns.
func scanPgOrganization(row pgx.Row) (Organization, error) {
	var org Organization
	var requestID, requestDigest *string
	if err := row.Scan(&org.ID, &org.Slug, &org.DisplayName, &requestID,
		&org.CreateTime, &org.UpdateTime, &requestDigest); err != nil {
		return Organization{}, err
	}
	org.RequestID, org.RequestDigest = derefString(requestID), derefString(requestDigest)
	org.CreateTime, org.UpdateTime = org.CreateTime.UTC(), org.UpdateTime.UTC()
	return org, nil
}

// scanPgEnvironment reads one environments row selected with
// environmentColumns.
func scanPgEnvironment(row pgx.Row) (Environment, error) {
	var env Environment
	var requestID, keyID, requestDigest *string
	var provisionTime, rotateTime, nextCheck *time.Time
	var ciphertext, proof []byte
	if err := row.Scan(&env.ID, &env.OrganizationID, &env.Slug, &env.DisplayName, &env.Type,
		&env.Driver, &env.Status, &env.StatusMessage, &env.IsDefault, &env.Hostname, &env.Region,
		&env.StorageLimitMB, &env.DatabaseURL, &requestID, &env.CreateTime, &env.UpdateTime,
		&provisionTime, &env.ExternalDatabase, &keyID, &ciphertext, &rotateTime, &requestDigest,
		&env.ResourcesMayExist, &env.Proof.State, &nextCheck, &proof); err != nil {
		return Environment{}, err
	}
	if err := decodeProof(proof, &env.Proof); err != nil {
		return Environment{}, err
	}
	env.Proof.NextCheckTime = derefTime(nextCheck)
	env.RequestID, env.RequestDigest = derefString(requestID), derefString(requestDigest)
	env.CreateTime, env.UpdateTime = env.CreateTime.UTC(), env.UpdateTime.UTC()
	env.ProvisionTime = derefTime(provisionTime)
	if len(ciphertext) > 0 {
		env.Credential = Credential{
			KeyID: derefString(keyID), Ciphertext: ciphertext, RotateTime: derefTime(rotateTime),
		}
	}
	return env, nil
}

// pgCredential is c as the values of the credential_key_id,
// credential_ciphertext and credential_rotate_time columns: all NULL for none
// (see hasCredential), the rotate time truncated as pgTime does.
func pgCredential(c Credential) (keyID *string, ciphertext []byte, rotateTime *time.Time) {
	if !hasCredential(c) {
		return nil, nil, nil
	}
	return &c.KeyID, c.Ciphertext, pgNullTime(pgTime(c.RotateTime))
}

// collectPg scans every row of a query with scan; rows and err are what the
// query returned. An empty result is nil, as from the SQLite store.
func collectPg[T any](rows pgx.Rows, err error, scan func(pgx.Row) (T, error)) ([]T, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// pgTime is t as PostgreSQL stores it: truncated to the microsecond, in UTC.
// The store truncates every time it writes or compares, so what a caller gets
// back, and what an idempotent retry is compared with, is what the database
// holds rather than whatever rounding the driver would apply.
func pgTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.Truncate(time.Microsecond).UTC()
}

// pgNullTime stores the zero time as NULL, which the schema uses for "not yet".
func pgNullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// derefTime reads a nullable time column back in UTC, NULL as the zero time.
func derefTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// derefString reads a nullable text column back, NULL as "".
func derefString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// pgCode is the SQLSTATE of err when PostgreSQL refused the statement, else "".
func pgCode(err error) string {
	var e *pgconn.PgError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// pgViolates reports whether err is PostgreSQL refusing a row with the given
// SQLSTATE because of the named constraint or unique index.
func pgViolates(err error, code, constraint string) bool {
	var e *pgconn.PgError
	return errors.As(err, &e) && e.Code == code && e.ConstraintName == constraint
}

// pgRetryable reports whether err means the transaction lost to a concurrent
// one and may succeed when run again from the start.
func pgRetryable(err error) bool {
	switch pgCode(err) {
	case pgSerializationFailure, pgDeadlockDetected:
		return true
	}
	return false
}

// wrapErrIf is wrapErr for an error that may be nil, which stays nil.
func wrapErrIf(op string, err error) error {
	if err == nil {
		return nil
	}
	return wrapErr(op, err)
}

// wantOneRowPg turns the result of an UPDATE or DELETE by primary key into
// ErrNotFound when it matched no row.
func wantOneRowPg(tag pgconn.CommandTag, err error) error {
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}
