package controlplane

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// sqliteMigrations holds the SQLite schema, applied by OpenSQLite.
//
//go:embed migrations/sqlite/*.sql
var sqliteMigrations embed.FS

// sqliteMigrationsDir is the folder of sqliteMigrations the runner reads.
const sqliteMigrationsDir = "migrations/sqlite"

// Paging bounds: a request without a limit gets defaultPageLimit items, and no
// request gets more than maxPageLimit, so one call cannot load a whole table.
const (
	defaultPageLimit = 50
	maxPageLimit     = 1000
)

// timeLayout stores times as UTC text with a fixed nine-digit fraction, so
// every instant round-trips to the nanosecond and the text sorts like the time.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// SQLite is the embedded Store, one database file on local disk. It is safe
// for concurrent use; uniqueness and the single default per organization are
// enforced by the schema, and every write runs in an IMMEDIATE transaction so
// check-then-write sequences inside it cannot interleave with other writers.
type SQLite struct {
	// w is a pool of exactly one connection that performs every write, so the
	// writers of this process queue in database/sql, honouring their
	// contexts, instead of polling SQLite's lock; busy_timeout still covers
	// writers in other processes.
	w *sql.DB
	// r serves reads concurrently with the writer, which WAL allows. Its
	// connections are query_only, so a read path can never write by mistake.
	r *sql.DB
	// now is the clock of the times the store sets itself (UpdateTime).
	now func() time.Time
	// checks is the hostname-check lock (LockHostnameChecks).
	checks sync.Mutex
}

var _ Store = (*SQLite)(nil)

// OpenSQLite opens, creating it if needed, the database file at path (its
// parent directory is created with mode 0700, the file with 0600 because it
// maps every tenant's environments) and applies the pending migrations, so
// the returned store is ready to use. Close it when done.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	if path == "" {
		return nil, errors.New("controlplane: open sqlite: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("controlplane: open sqlite: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("controlplane: open sqlite: %w", err)
	}
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("controlplane: open sqlite: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("controlplane: open sqlite: %w", err)
	}

	w, err := sql.Open("sqlite", sqliteDSN(abs, false))
	if err != nil {
		return nil, fmt.Errorf("controlplane: open sqlite: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	r, err := sql.Open("sqlite", sqliteDSN(abs, true))
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("controlplane: open sqlite: %w", err)
	}
	readers := max(4, runtime.NumCPU())
	r.SetMaxOpenConns(readers)
	r.SetMaxIdleConns(readers)
	s := &SQLite{w: w, r: r, now: time.Now}

	// The writer goes first: it is the connection that switches a new file
	// to WAL, which the query_only readers could not do.
	if err := w.PingContext(ctx); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("controlplane: open sqlite: %w", err)
	}
	if _, err := migrate(ctx, w, sqliteMigrations, sqliteMigrationsDir, questionMark); err != nil {
		_ = s.Close()
		return nil, err
	}
	if err := r.PingContext(ctx); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("controlplane: open sqlite: %w", err)
	}
	return s, nil
}

// sqliteDSN is the modernc.org/sqlite data source name of the file at the
// absolute path abs. It is a file: URI, so no character of the path can be
// mistaken for the start of the parameters. Every connection gets WAL (readers
// beside one writer), a busy timeout (waits for writers of other processes
// instead of failing), foreign keys (off by default in SQLite), synchronous
// NORMAL (durable at checkpoints, safe from corruption under WAL) and
// IMMEDIATE transactions, which take the write lock at BEGIN so two
// transactions never both read and then deadlock upgrading to write.
func sqliteDSN(abs string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	if readOnly {
		q.Set("_query_only", "1")
	}
	p := filepath.ToSlash(abs)
	if !strings.HasPrefix(p, "/") {
		p = "/" + p // a Windows drive path, file:///C:/...
	}
	u := url.URL{Scheme: "file", Path: p, RawQuery: q.Encode()}
	return u.String()
}

// Ping checks that both the writing and the reading connections work.
func (s *SQLite) Ping(ctx context.Context) error {
	if err := s.w.PingContext(ctx); err != nil {
		return fmt.Errorf("controlplane: ping sqlite: %w", err)
	}
	if err := s.r.PingContext(ctx); err != nil {
		return fmt.Errorf("controlplane: ping sqlite: %w", err)
	}
	return nil
}

// Close closes both connection pools.
func (s *SQLite) Close() error {
	return errors.Join(s.r.Close(), s.w.Close())
}

// CreateOrganization implements Store.
func (s *SQLite) CreateOrganization(ctx context.Context, org Organization) (Organization, bool, error) {
	var stored Organization
	var created bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		if org.RequestID != "" {
			prev, err := scanOrganization(tx.QueryRowContext(ctx,
				`SELECT `+organizationColumns+` FROM organizations WHERE request_id = ?`, org.RequestID))
			switch {
			case err == nil:
				if !sameOrganizationRequest(prev, org) {
					return ErrRequestReused
				}
				stored = prev
				return nil
			case !errors.Is(err, sql.ErrNoRows):
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO organizations
			(id, slug, display_name, request_id, create_time, update_time, request_digest)
			VALUES (?, ?, ?, ?, ?, ?, ?)`,
			org.ID, org.Slug, org.DisplayName, nullString(org.RequestID),
			formatTime(org.CreateTime), formatTime(org.UpdateTime), nullString(org.RequestDigest))
		switch {
		case isUniqueViolation(err, "organizations.slug"):
			return ErrOrganizationExists
		case err != nil:
			return err
		}
		stored, err = scanOrganization(tx.QueryRowContext(ctx,
			`SELECT `+organizationColumns+` FROM organizations WHERE id = ?`, org.ID))
		created = true
		return err
	})
	if err != nil {
		return Organization{}, false, wrapErr("create organization "+strconv.Quote(org.Slug), err)
	}
	return stored, created, nil
}

// sameOrganizationRequest reports whether req, a create carrying the request
// id of the stored organization, is a retry of the create that stored it:
// both carry the same request digest. A row stored without a digest (created
// before migration 0004, or by a caller that sent none) falls back to
// comparing the client-supplied fields as they are stored now.
func sameOrganizationRequest(stored, req Organization) bool {
	if stored.RequestDigest != "" {
		return stored.RequestDigest == req.RequestDigest
	}
	return stored.Slug == req.Slug && stored.DisplayName == req.DisplayName
}

// GetOrganization implements Store.
func (s *SQLite) GetOrganization(ctx context.Context, id string) (Organization, error) {
	org, err := scanOrganization(s.r.QueryRowContext(ctx,
		`SELECT `+organizationColumns+` FROM organizations WHERE id = ?`, id))
	if err != nil {
		return Organization{}, wrapErr("get organization "+strconv.Quote(id), err)
	}
	return org, nil
}

// ListOrganizations implements Store.
func (s *SQLite) ListOrganizations(ctx context.Context, page Page) ([]Organization, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+organizationColumns+` FROM organizations
		WHERE id > ? ORDER BY id LIMIT ?`, page.After, pageLimit(page))
	if err != nil {
		return nil, wrapErr("list organizations", err)
	}
	defer rows.Close()
	var out []Organization
	for rows.Next() {
		org, err := scanOrganization(rows)
		if err != nil {
			return nil, wrapErr("list organizations", err)
		}
		out = append(out, org)
	}
	if err := rows.Err(); err != nil {
		return nil, wrapErr("list organizations", err)
	}
	return out, nil
}

// CreateEnvironment implements Store.
func (s *SQLite) CreateEnvironment(ctx context.Context, env Environment, mode DefaultMode) (Environment, bool, error) {
	op := "create environment " + strconv.Quote(env.Slug)
	if mode != DefaultIfFirst && mode != DefaultYes && mode != DefaultNo {
		return Environment{}, false, fmt.Errorf("controlplane: %s: unknown default mode %d", op, mode)
	}
	var stored Environment
	var created bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		var orgExists bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM organizations WHERE id = ?)`,
			env.OrganizationID).Scan(&orgExists); err != nil {
			return err
		}
		if !orgExists {
			return ErrOrganizationMissing
		}
		if env.RequestID != "" {
			prev, err := scanEnvironment(tx.QueryRowContext(ctx, `SELECT `+environmentColumns+` FROM environments
				WHERE organization_id = ? AND request_id = ?`, env.OrganizationID, env.RequestID))
			switch {
			case err == nil:
				if !sameEnvironmentRequest(prev, env) {
					return ErrRequestReused
				}
				stored = prev
				return nil
			case !errors.Is(err, sql.ErrNoRows):
				return err
			}
		}

		var isDefault bool
		switch mode {
		case DefaultYes:
			if err := s.clearDefault(ctx, tx, env.OrganizationID); err != nil {
				return err
			}
			isDefault = true
		case DefaultIfFirst:
			var hasDefault bool
			if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM environments
				WHERE organization_id = ? AND is_default = 1)`, env.OrganizationID).Scan(&hasDefault); err != nil {
				return err
			}
			isDefault = !hasDefault
		}

		keyID, ciphertext, rotateTime := sqliteCredential(env.Credential)
		_, err := tx.ExecContext(ctx, `INSERT INTO environments
			(id, organization_id, slug, display_name, type, driver, status, status_message,
			 is_default, hostname, region, storage_limit_mb, database_url, request_id,
			 create_time, update_time, provision_time, external_database,
			 credential_key_id, credential_ciphertext, credential_rotate_time, request_digest,
			 resources_may_exist, hostname_state, hostname_next_check, hostname_proof)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			env.ID, env.OrganizationID, env.Slug, env.DisplayName, env.Type, env.Driver,
			env.Status, env.StatusMessage, isDefault, env.Hostname, env.Region,
			env.StorageLimitMB, env.DatabaseURL, nullString(env.RequestID),
			formatTime(env.CreateTime), formatTime(env.UpdateTime), nullTime(env.ProvisionTime),
			env.ExternalDatabase, keyID, ciphertext, rotateTime, nullString(env.RequestDigest),
			env.ResourcesMayExist, proofState(env.Proof), nullTime(env.Proof.NextCheckTime), string(encodeProof(env.Proof)))
		switch {
		case isUniqueViolation(err, "environments.hostname"):
			return ErrHostnameTaken
		case isUniqueViolation(err, "environments.organization_id, environments.slug"):
			return ErrEnvironmentExists
		case isForeignKeyViolation(err):
			return ErrOrganizationMissing
		case err != nil:
			return err
		}
		stored, err = scanEnvironment(tx.QueryRowContext(ctx,
			`SELECT `+environmentColumns+` FROM environments WHERE id = ?`, env.ID))
		created = true
		return err
	})
	if err != nil {
		return Environment{}, false, wrapErr(op, err)
	}
	return stored, created, nil
}

// sameEnvironmentRequest reports whether req, a create carrying the request
// id of the stored environment in its organization, is a retry of the create
// that stored it: both carry the same request digest, whatever the
// environment became since. A row stored without a digest (created before
// migration 0004, or by a caller that sent none) falls back to comparing the
// client-supplied fields as they are stored now; fields the server fills in
// (status, database URL, times), the default mode and the credential (sealed
// afresh on every attempt) are not compared.
func sameEnvironmentRequest(stored, req Environment) bool {
	if stored.RequestDigest != "" {
		return stored.RequestDigest == req.RequestDigest
	}
	a, b := stored, req
	return a.Slug == b.Slug && a.DisplayName == b.DisplayName && a.Type == b.Type &&
		a.Driver == b.Driver && a.Hostname == b.Hostname && a.Region == b.Region &&
		a.StorageLimitMB == b.StorageLimitMB && a.ExternalDatabase == b.ExternalDatabase
}

// hasCredential reports whether c holds a secret. A Credential with an empty
// Ciphertext is none, whatever its other fields: the stores write it as NULL
// columns and read it back as the zero Credential (a nil Ciphertext, never
// an empty non-nil one).
func hasCredential(c Credential) bool { return len(c.Ciphertext) > 0 }

// sqliteCredential is c as the values of the credential_key_id,
// credential_ciphertext and credential_rotate_time columns: all NULL for none.
func sqliteCredential(c Credential) (keyID, ciphertext, rotateTime any) {
	if !hasCredential(c) {
		return nil, nil, nil
	}
	return c.KeyID, c.Ciphertext, nullTime(c.RotateTime)
}

// clearDefault takes the default flag off the organization's default
// environment, if it has one, as the first half of moving the flag inside tx.
func (s *SQLite) clearDefault(ctx context.Context, tx *sql.Tx, organizationID string) error {
	_, err := tx.ExecContext(ctx, `UPDATE environments SET is_default = 0, update_time = ?
		WHERE organization_id = ? AND is_default = 1`, formatTime(s.now()), organizationID)
	return err
}

// GetEnvironment implements Store.
func (s *SQLite) GetEnvironment(ctx context.Context, id string) (Environment, error) {
	env, err := scanEnvironment(s.r.QueryRowContext(ctx,
		`SELECT `+environmentColumns+` FROM environments WHERE id = ?`, id))
	if err != nil {
		return Environment{}, wrapErr("get environment "+strconv.Quote(id), err)
	}
	return env, nil
}

// GetEnvironmentByHostname implements Store.
func (s *SQLite) GetEnvironmentByHostname(ctx context.Context, hostname string) (Environment, error) {
	env, err := scanEnvironment(s.r.QueryRowContext(ctx,
		`SELECT `+environmentColumns+` FROM environments WHERE hostname = ? AND hostname_state = 'verified'`, hostname))
	if err != nil {
		return Environment{}, wrapErr("get environment by hostname "+strconv.Quote(hostname), err)
	}
	return env, nil
}

// ListHostnameClaims implements Store.
func (s *SQLite) ListHostnameClaims(ctx context.Context, hostname string) ([]Environment, error) {
	return s.listEnvironments(ctx, "list the claims of hostname "+strconv.Quote(hostname),
		`SELECT `+environmentColumns+` FROM environments WHERE hostname = ? ORDER BY id LIMIT ?`,
		hostname, maxPageLimit)
}

// ListHostnameChecks implements Store.
func (s *SQLite) ListHostnameChecks(ctx context.Context, due time.Time, limit int) ([]Environment, error) {
	return s.listEnvironments(ctx, "list due hostname checks",
		`SELECT `+environmentColumns+` FROM environments
		WHERE hostname_next_check IS NOT NULL AND hostname_next_check <= ?
		ORDER BY hostname_next_check, id LIMIT ?`,
		formatTime(due), pageLimit(Page{Limit: limit}))
}

// LockHostnameChecks implements Store. An embedded control plane has one
// process, so the lock is this store's own.
func (s *SQLite) LockHostnameChecks(context.Context) (func(), bool, error) {
	if !s.checks.TryLock() {
		return nil, false, nil
	}
	return s.checks.Unlock, true, nil
}

// ListEnvironments implements Store. An organization that does not exist has
// no environments, so it yields an empty page rather than an error.
func (s *SQLite) ListEnvironments(ctx context.Context, organizationID string, page Page) ([]Environment, error) {
	return s.listEnvironments(ctx, "list environments of "+strconv.Quote(organizationID),
		`SELECT `+environmentColumns+` FROM environments
		WHERE organization_id = ? AND id > ? ORDER BY id LIMIT ?`,
		organizationID, page.After, pageLimit(page))
}

// listEnvironments runs a query selecting environmentColumns and scans its rows.
func (s *SQLite) listEnvironments(ctx context.Context, op, query string, args ...any) ([]Environment, error) {
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, wrapErr(op, err)
	}
	defer rows.Close()
	var out []Environment
	for rows.Next() {
		env, err := scanEnvironment(rows)
		if err != nil {
			return nil, wrapErr(op, err)
		}
		out = append(out, env)
	}
	if err := rows.Err(); err != nil {
		return nil, wrapErr(op, err)
	}
	return out, nil
}

// UpdateEnvironment implements Store.
func (s *SQLite) UpdateEnvironment(ctx context.Context, id string, patch EnvironmentPatch) (Environment, error) {
	var stored Environment
	err := s.write(ctx, func(tx *sql.Tx) error {
		cur, err := scanEnvironment(tx.QueryRowContext(ctx,
			`SELECT `+environmentColumns+` FROM environments WHERE id = ?`, id))
		if err != nil {
			return err
		}
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
		now := s.now()
		if patch.TakeHostname && next.Proof.Routes() {
			if err := s.takeHostname(ctx, tx, next.Hostname, id, now); err != nil {
				return err
			}
		}
		keyID, ciphertext, rotateTime := sqliteCredential(next.Credential)
		_, err = tx.ExecContext(ctx, `UPDATE environments SET
			hostname = ?, display_name = ?, is_default = ?, status = ?, status_message = ?,
			region = ?, storage_limit_mb = ?, database_url = ?, provision_time = ?, update_time = ?,
			credential_key_id = ?, credential_ciphertext = ?, credential_rotate_time = ?,
			resources_may_exist = ?, hostname_state = ?, hostname_next_check = ?, hostname_proof = ?
			WHERE id = ?`,
			next.Hostname, next.DisplayName, next.IsDefault, next.Status, next.StatusMessage,
			next.Region, next.StorageLimitMB, next.DatabaseURL, nullTime(next.ProvisionTime),
			formatTime(now), keyID, ciphertext, rotateTime, next.ResourcesMayExist,
			proofState(next.Proof), nullTime(next.Proof.NextCheckTime), string(encodeProof(next.Proof)), id)
		switch {
		case isUniqueViolation(err, "environments.hostname"):
			return ErrHostnameTaken
		case err != nil:
			return err
		}
		stored, err = scanEnvironment(tx.QueryRowContext(ctx,
			`SELECT `+environmentColumns+` FROM environments WHERE id = ?`, id))
		return err
	})
	if errors.Is(err, ErrStatusMismatch) || errors.Is(err, ErrHostnameMoved) {
		return stored, wrapErr("update environment "+strconv.Quote(id), err)
	}
	if err != nil {
		return Environment{}, wrapErr("update environment "+strconv.Quote(id), err)
	}
	return stored, nil
}

// takeHostname moves the claim of the environment other than id that holds
// hostname verified, if any, back to pending inside tx, so that id can hold
// it verified.
func (s *SQLite) takeHostname(ctx context.Context, tx *sql.Tx, hostname, id string, now time.Time) error {
	holder, err := scanEnvironment(tx.QueryRowContext(ctx, `SELECT `+environmentColumns+` FROM environments
		WHERE hostname = ? AND hostname_state = 'verified' AND id <> ?`, hostname, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	p := demoted(holder.Proof, now)
	_, err = tx.ExecContext(ctx, `UPDATE environments SET hostname_state = ?, hostname_next_check = ?,
		hostname_proof = ?, update_time = ? WHERE id = ?`,
		p.State, nullTime(p.NextCheckTime), string(encodeProof(p)), formatTime(now), holder.ID)
	return err
}

// setIf stores *v in dst when the patch carries v.
func setIf[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

// DeleteEnvironment implements Store.
func (s *SQLite) DeleteEnvironment(ctx context.Context, id string) error {
	op := "delete environment " + strconv.Quote(id)
	res, err := s.w.ExecContext(ctx, `DELETE FROM environments WHERE id = ?`, id)
	if err != nil {
		return wrapErr(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return wrapErr(op, err)
	}
	if n == 0 {
		return wrapErr(op, ErrNotFound)
	}
	return nil
}

// write runs fn in a transaction on the writing connection and commits it
// when fn succeeds. The DSN makes it BEGIN IMMEDIATE, so everything fn reads
// stays true until the commit.
func (s *SQLite) write(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }() // a no-op after Commit
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// organizationColumns lists the columns scanOrganization reads, in its order.
const organizationColumns = `id, slug, display_name, request_id, create_time, update_time, request_digest`

// scanOrganization reads one organizations row selected with organizationColumns.
func scanOrganization(row interface{ Scan(...any) error }) (Organization, error) {
	var org Organization
	var requestID, requestDigest sql.NullString
	var createTime, updateTime string
	if err := row.Scan(&org.ID, &org.Slug, &org.DisplayName, &requestID, &createTime, &updateTime,
		&requestDigest); err != nil {
		return Organization{}, err
	}
	org.RequestID, org.RequestDigest = requestID.String, requestDigest.String
	var err error
	if org.CreateTime, err = parseTime(createTime); err != nil {
		return Organization{}, err
	}
	if org.UpdateTime, err = parseTime(updateTime); err != nil {
		return Organization{}, err
	}
	return org, nil
}

// environmentColumns lists the columns scanEnvironment reads, in its order.
const environmentColumns = `id, organization_id, slug, display_name, type, driver, status,
	status_message, is_default, hostname, region, storage_limit_mb, database_url,
	request_id, create_time, update_time, provision_time, external_database,
	credential_key_id, credential_ciphertext, credential_rotate_time, request_digest,
	resources_may_exist, hostname_state, hostname_next_check, hostname_proof`

// scanEnvironment reads one environments row selected with environmentColumns.
func scanEnvironment(row interface{ Scan(...any) error }) (Environment, error) {
	var env Environment
	var requestID, provisionTime, keyID, rotateTime, requestDigest, nextCheck sql.NullString
	var createTime, updateTime, proof string
	var ciphertext []byte
	if err := row.Scan(&env.ID, &env.OrganizationID, &env.Slug, &env.DisplayName, &env.Type,
		&env.Driver, &env.Status, &env.StatusMessage, &env.IsDefault, &env.Hostname, &env.Region,
		&env.StorageLimitMB, &env.DatabaseURL, &requestID, &createTime, &updateTime,
		&provisionTime, &env.ExternalDatabase, &keyID, &ciphertext, &rotateTime, &requestDigest,
		&env.ResourcesMayExist, &env.Proof.State, &nextCheck, &proof); err != nil {
		return Environment{}, err
	}
	if err := decodeProof([]byte(proof), &env.Proof); err != nil {
		return Environment{}, err
	}
	if nextCheck.Valid {
		var err error
		if env.Proof.NextCheckTime, err = parseTime(nextCheck.String); err != nil {
			return Environment{}, err
		}
	}
	env.RequestID, env.RequestDigest = requestID.String, requestDigest.String
	var err error
	if env.CreateTime, err = parseTime(createTime); err != nil {
		return Environment{}, err
	}
	if env.UpdateTime, err = parseTime(updateTime); err != nil {
		return Environment{}, err
	}
	if provisionTime.Valid {
		if env.ProvisionTime, err = parseTime(provisionTime.String); err != nil {
			return Environment{}, err
		}
	}
	if len(ciphertext) > 0 {
		env.Credential = Credential{KeyID: keyID.String, Ciphertext: ciphertext}
		if rotateTime.Valid {
			if env.Credential.RotateTime, err = parseTime(rotateTime.String); err != nil {
				return Environment{}, err
			}
		}
	}
	return env, nil
}

// pageLimit is the LIMIT of a page request: the default when none is asked
// for, never more than maxPageLimit.
func pageLimit(p Page) int {
	switch {
	case p.Limit <= 0:
		return defaultPageLimit
	case p.Limit > maxPageLimit:
		return maxPageLimit
	default:
		return p.Limit
	}
}

// formatTime renders t for a time column (see timeLayout).
func formatTime(t time.Time) string {
	return t.UTC().Format(timeLayout)
}

// parseTime reads a time column back; the result is in UTC.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad stored time %q: %w", s, err)
	}
	return t, nil
}

// nullTime stores the zero time as NULL, which the schema uses for "not yet".
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return formatTime(t)
}

// nullString stores "" as NULL, so absent idempotency keys never collide in
// the unique indexes.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// isUniqueViolation reports whether err is SQLite refusing a row because it
// repeats the unique key named by columns, as SQLite spells it in the message
// ("table.column" or "table.a, table.b").
func isUniqueViolation(err error, columns string) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) || e.Code() != sqlite3.SQLITE_CONSTRAINT_UNIQUE {
		return false
	}
	msg := e.Error()
	i := strings.Index(msg, "UNIQUE constraint failed: ")
	if i < 0 {
		return false
	}
	rest := msg[i+len("UNIQUE constraint failed: "):]
	// The message continues with " (2067)" after the column list; compare the
	// whole list so (organization_id) never matches (organization_id, slug).
	if j := strings.Index(rest, " ("); j >= 0 {
		rest = rest[:j]
	}
	return rest == columns
}

// isForeignKeyViolation reports whether err is SQLite refusing a row whose
// reference points at nothing.
func isForeignKeyViolation(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

// sentinels are the errors callers test for; wrapErr keeps their text.
var sentinels = []error{
	ErrNotFound, ErrOrganizationExists, ErrEnvironmentExists, ErrHostnameTaken,
	ErrOrganizationMissing, ErrRequestReused, ErrVersionConflict, ErrStatusMismatch,
}

// storageFull reports whether err is a database refusing a write for want
// of room: SQLite's SQLITE_FULL, PostgreSQL's disk_full, or ENOSPC itself.
func storageFull(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_FULL {
		return true
	}
	return pgCode(err) == "53100" || errors.Is(err, syscall.ENOSPC)
}

// wrapErr adds the operation to err for the caller. A missing row becomes
// ErrNotFound; a sentinel keeps its own text, so callers see which rule was
// broken and nothing of the SQL behind it; anything else is an unexpected
// failure and is wrapped whole for the logs.
func wrapErr(op string, err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if storageFull(err) {
		return fmt.Errorf("controlplane: %s: %w: %w", op, ErrStorageFull, err)
	}
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return fmt.Errorf("%s: %w", op, s)
		}
	}
	return fmt.Errorf("controlplane: %s: %w", op, err)
}
