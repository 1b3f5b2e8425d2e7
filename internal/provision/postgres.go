package provision

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/envplane/envplane/internal/controlplane"
)

// PostgresNamePrefix starts the name of every database and role the Postgres
// provisioner makes, so an operator can tell them apart from the cluster's
// other databases and roles.
const PostgresNamePrefix = "envplane_env_"

// postgresAdminMaxConns bounds the admin pool: provisioning is rare and
// serial per environment, and the cluster's connection slots belong to the
// environments.
const postgresAdminMaxConns = 4

// PostgresDefaultMaxConns is the pool size PostgresConnConfig gives an
// environment's pool: many environments share a cluster's connection slots.
const PostgresDefaultMaxConns = 4

// postgresValidateTimeout bounds Validate, which runs inside a client's request.
const postgresValidateTimeout = 5 * time.Second

// SQLSTATE codes the provisioner tolerates when a concurrent or earlier
// attempt already did the work.
const (
	sqlstateDuplicateObject   = "42710" // CREATE ROLE of an existing role
	sqlstateDuplicateDatabase = "42P04" // CREATE DATABASE of an existing database
	sqlstateUndefinedObject   = "42704" // ALTER/DROP OWNED of a missing role
	// A concurrent CREATE ROLE or CREATE DATABASE of the same name can also
	// fail on the catalog's unique index rather than with the codes above.
	sqlstateUniqueViolation = "23505"
)

// Public messages of the Postgres provisioner's errors: none names a
// database, role, host or statement.
const (
	pgMsgInvalidID      = "the environment id is not valid for a PostgreSQL database"
	pgMsgConnect        = "could not connect to the PostgreSQL cluster"
	pgMsgRole           = "could not create the environment's PostgreSQL role"
	pgMsgDatabase       = "could not create the environment's PostgreSQL database"
	pgMsgSecure         = "could not restrict access to the environment's PostgreSQL database"
	pgMsgDropDatabase   = "could not remove the environment's PostgreSQL database"
	pgMsgDropRole       = "could not remove the environment's PostgreSQL role"
	pgMsgRotate         = "could not rotate the environment's PostgreSQL credential"
	pgMsgRoleMissing    = "the environment's PostgreSQL role does not exist"
	pgMsgCredential     = "could not generate a credential for the environment's PostgreSQL database"
	pgMsgClosed         = "the PostgreSQL provisioner is shut down"
	pgMsgBadURL         = "the PostgreSQL database URL is not valid"
	pgMsgURLPassword    = "the PostgreSQL database URL must not contain a password; send it as the secret"
	pgMsgURLHost        = "the PostgreSQL database URL must name a network host"
	pgMsgValidateFailed = "could not connect to the PostgreSQL database with the given URL and secret"
)

// Postgres provisions, per environment, a database and a login role owning it
// on one PostgreSQL cluster, reached through an admin role that has CREATEDB
// and CREATEROLE (or is a superuser). Each environment's role can connect to
// its own database only: CONNECT is revoked from PUBLIC on every database it
// makes. Passwords are sent to the server as SCRAM-SHA-256 verifiers, so the
// plaintext never reaches the server, its logs or pg_stat_statements.
//
// Postgres connects lazily, on first use, and is safe for concurrent use;
// Close releases its connections.
type Postgres struct {
	cfg     *pgxpool.Config
	host    string // first host of the admin URL; a directory for a Unix socket
	port    uint16
	sslmode string

	mu     sync.Mutex
	pool   *pgxpool.Pool
	closed bool
}

// NewPostgres returns a provisioner for the cluster of adminURL (URL or
// keyword/value form, as pgx reads it). It parses the URL but does not
// connect, so a cluster that is down does not stop the server from starting.
func NewPostgres(adminURL string) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(adminURL)
	if err != nil {
		// pgx redacts passwords from its parse errors.
		return nil, &Error{Public: "the PostgreSQL admin URL is not valid", Err: err}
	}
	cfg.MaxConns = postgresAdminMaxConns
	cfg.MinConns = 0
	return &Postgres{
		cfg:     cfg,
		host:    cfg.ConnConfig.Host,
		port:    cfg.ConnConfig.Port,
		sslmode: adminSSLMode(adminURL),
	}, nil
}

// sslmodeKV finds sslmode in a keyword/value connection string.
var sslmodeKV = regexp.MustCompile(`(?:^|\s)sslmode\s*=\s*'?([A-Za-z-]+)`)

// adminSSLMode is the sslmode the admin connection uses, which environment
// URLs repeat so that environments are reached as securely as the cluster
// is administered: the connection string's, else PGSSLMODE's, else libpq's
// and pgx's default "prefer".
func adminSSLMode(adminURL string) string {
	mode := ""
	if strings.HasPrefix(adminURL, "postgres://") || strings.HasPrefix(adminURL, "postgresql://") {
		if u, err := url.Parse(adminURL); err == nil {
			q := u.Query()
			mode = q.Get("sslmode")
			if mode == "" && q.Get("ssl") == "true" {
				mode = "require"
			}
		}
	} else if m := sslmodeKV.FindStringSubmatch(adminURL); m != nil {
		mode = m[1]
	}
	if mode == "" {
		mode = os.Getenv("PGSSLMODE")
	}
	switch mode {
	case "disable", "allow", "prefer", "require", "verify-ca", "verify-full":
		return mode
	default:
		return "prefer"
	}
}

// Close releases the provisioner's connections; later calls fail.
func (p *Postgres) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.pool != nil {
		p.pool.Close()
		p.pool = nil
	}
}

// adminPool returns the admin pool, creating it on first use. Creating a pool
// opens no connection; the first statement does.
func (p *Postgres) adminPool(ctx context.Context) (*pgxpool.Pool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, &Error{Public: pgMsgClosed, Err: errors.New("provision: postgres provisioner closed")}
	}
	if p.pool == nil {
		pool, err := pgxpool.NewWithConfig(ctx, p.cfg.Copy())
		if err != nil {
			return nil, &Error{Public: pgMsgConnect, Err: err}
		}
		p.pool = pool
	}
	return p.pool, nil
}

// PostgresName is the name of both the database and the role of the
// environment environmentID (a UUID): PostgresNamePrefix and the UUID's 32
// hex digits, 45 bytes, within PostgreSQL's 63-byte identifier limit and made
// only of characters that need no quoting (they are quoted anyway).
func PostgresName(environmentID string) (string, error) {
	u, err := uuid.Parse(environmentID)
	if err != nil {
		return "", err
	}
	return PostgresNamePrefix + strings.ReplaceAll(u.String(), "-", ""), nil
}

// DatabaseURL is the client-visible URL of an environment's database on this
// cluster: the role as user, no password.
func (p *Postgres) DatabaseURL(environmentID string) (string, error) {
	name, err := PostgresName(environmentID)
	if err != nil {
		return "", err
	}
	return p.databaseURL(name), nil
}

func (p *Postgres) databaseURL(name string) string {
	u := url.URL{Scheme: "postgres", User: url.User(name), Path: "/" + name}
	q := url.Values{}
	q.Set("sslmode", p.sslmode)
	if strings.HasPrefix(p.host, "/") || strings.HasPrefix(p.host, "@") {
		// A Unix socket directory goes in the query, as libpq expects.
		q.Set("host", p.host)
		q.Set("port", strconv.Itoa(int(p.port)))
	} else {
		u.Host = net.JoinHostPort(p.host, strconv.Itoa(int(p.port)))
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// Provision creates env's role and database, or brings them back in line
// when an earlier attempt got part of the way: the role gets a new password
// either way (the Result's Secret); the database is created if missing with
// CONNECT revoked from PUBLIC; inside it the public schema is given to the
// role with CREATE revoked from PUBLIC; last, the role is made the
// database's owner.
//
// The database belongs to the admin until that last step, because an admin
// that is not a superuser can only manage the public schema (owned by
// pg_database_owner) of a database it owns: the role, being NOINHERIT, does
// not pass pg_database_owner's rights on to its members.
//
// A failure before the admin connection holds the environment's lock (the
// cluster unreachable, the admin refused, the lock not granted in time) is
// reported with Error.NothingCreated: no statement that creates anything was
// sent. Any later failure may follow a role or database it made.
func (p *Postgres) Provision(ctx context.Context, env controlplane.Environment) (Result, error) {
	name, err := PostgresName(env.ID)
	if err != nil {
		return Result{}, &Error{Public: pgMsgInvalidID, Err: err, NothingCreated: true}
	}
	password, verifier, err := newPostgresPassword()
	if err != nil {
		return Result{}, &Error{Public: pgMsgCredential, Err: err, NothingCreated: true}
	}
	ident := pgx.Identifier{name}.Sanitize()
	// locked tells a failure to reach the cluster or take the lock, before
	// any statement that creates something, from one after.
	locked := false
	err = p.withEnvironmentLock(ctx, name, pgMsgRole, func(conn *pgx.Conn) error {
		locked = true
		if err := ensureRole(ctx, conn, name, verifier); err != nil {
			return err
		}
		if err := ensureDatabase(ctx, conn, name); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, "REVOKE ALL ON DATABASE "+ident+" FROM PUBLIC"); err != nil {
			return classify(pgMsgSecure, fmt.Errorf("revoke public on database %s: %w", name, err))
		}
		if err := p.secureSchema(ctx, name); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, "ALTER DATABASE "+ident+" OWNER TO "+ident); err != nil {
			return classify(pgMsgDatabase, fmt.Errorf("set owner of database %s: %w", name, err))
		}
		return nil
	})
	if err != nil {
		var pe *Error
		if !locked && errors.As(err, &pe) {
			pe.NothingCreated = true
		}
		return Result{}, err
	}
	return Result{DatabaseURL: p.databaseURL(name), Secret: password}, nil
}

// withEnvironmentLock runs f on an admin connection holding a session-level
// advisory lock keyed by the environment's name, so that provisioning,
// rotating and removing one environment never interleave, even across
// replicas sharing the cluster (concurrent ALTER ROLE on one role fails with
// "tuple concurrently updated"). If the lock cannot be released the
// connection is closed, which releases it. Failures to connect or lock are
// reported with public.
func (p *Postgres) withEnvironmentLock(ctx context.Context, name, public string, f func(*pgx.Conn) error) (err error) {
	pool, err := p.adminPool(ctx)
	if err != nil {
		return err
	}
	pc, err := pool.Acquire(ctx)
	if err != nil {
		return classify(public, fmt.Errorf("acquire admin connection: %w", err))
	}
	conn := pc.Conn()
	defer pc.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_catalog.pg_advisory_lock(pg_catalog.hashtextextended($1, 0))", name); err != nil {
		// A cancelled wait may have been granted after all: drop the session.
		_ = conn.Close(context.WithoutCancel(ctx))
		return classify(public, fmt.Errorf("lock environment %s: %w", name, err))
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, uerr := conn.Exec(uctx, "SELECT pg_catalog.pg_advisory_unlock(pg_catalog.hashtextextended($1, 0))", name); uerr != nil {
			_ = conn.Close(uctx)
		}
	}()
	return f(conn)
}

// roleAttributes are the attributes every environment role has, stated in
// full on ALTER too so a role tampered with converges back. Only a superuser
// may even restate NOSUPERUSER, NOREPLICATION and NOBYPASSRLS on ALTER, so
// other admins leave those out; they cannot have been granted by them either.
const (
	roleAttributes      = "LOGIN NOCREATEDB NOCREATEROLE NOINHERIT VALID UNTIL 'infinity'"
	superRoleAttributes = "NOSUPERUSER NOREPLICATION NOBYPASSRLS"
)

// ensureRole creates the role with the password verifier, or resets the
// attributes and password of a role an earlier attempt made. An admin that
// is not a superuser then joins the role, inheriting its rights: PostgreSQL
// requires that to hand the role a database and a schema, and to manage and
// drop them once the role owns them.
func ensureRole(ctx context.Context, conn *pgx.Conn, name, verifier string) error {
	ident := pgx.Identifier{name}.Sanitize()
	var exists, adminSuper, adminInRole bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1),
		(SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)`, name).Scan(&exists, &adminSuper); err != nil {
		return classify(pgMsgRole, fmt.Errorf("look up role %s: %w", name, err))
	}
	password := " PASSWORD " + quoteLiteral(verifier)
	if !exists {
		_, err := conn.Exec(ctx, "CREATE ROLE "+ident+" WITH "+roleAttributes+" "+superRoleAttributes+password)
		if err != nil && !hasSQLState(err, sqlstateDuplicateObject, sqlstateUniqueViolation) {
			return classify(pgMsgRole, fmt.Errorf("create role %s: %w", name, err))
		}
		// On a duplicate another process created it first: ALTER below.
		exists = err != nil
	}
	if exists {
		attrs := roleAttributes
		if adminSuper {
			attrs += " " + superRoleAttributes
		}
		if _, err := conn.Exec(ctx, "ALTER ROLE "+ident+" WITH "+attrs+password); err != nil {
			return classify(pgMsgRole, fmt.Errorf("alter role %s: %w", name, err))
		}
	}
	if adminSuper {
		return nil
	}
	if err := conn.QueryRow(ctx, "SELECT pg_catalog.pg_has_role(current_user, $1, 'USAGE')", name).Scan(&adminInRole); err != nil {
		return classify(pgMsgRole, fmt.Errorf("check admin membership in role %s: %w", name, err))
	}
	if !adminInRole {
		if _, err := conn.Exec(ctx, "GRANT "+ident+" TO CURRENT_USER"); err != nil {
			return classify(pgMsgRole, fmt.Errorf("grant role %s to the admin: %w", name, err))
		}
	}
	return nil
}

// ensureDatabase creates the database, owned by the admin for now, unless it
// exists. CREATE DATABASE cannot run in a transaction, hence the existence
// check and the tolerated duplicate errors instead of one atomic statement.
// The database is copied from template0 in UTF8, so it holds nothing the
// operator put in template1 and a session left open on template1 cannot make
// the copy fail.
func ensureDatabase(ctx context.Context, conn *pgx.Conn, name string) error {
	ident := pgx.Identifier{name}.Sanitize()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return classify(pgMsgDatabase, fmt.Errorf("look up database %s: %w", name, err))
	}
	if exists {
		return nil
	}
	_, err := conn.Exec(ctx, "CREATE DATABASE "+ident+" WITH TEMPLATE template0 ENCODING 'UTF8'")
	if err != nil && !hasSQLState(err, sqlstateDuplicateDatabase, sqlstateUniqueViolation) {
		return classify(pgMsgDatabase, fmt.Errorf("create database %s: %w", name, err))
	}
	return nil
}

// secureSchema connects to the environment's database with the admin
// credentials and gives its public schema to the role, revoking CREATE on it
// from PUBLIC (the default since PostgreSQL 15, not before). It runs before
// the role owns the database (see Provision) and again on every retry.
func (p *Postgres) secureSchema(ctx context.Context, name string) error {
	cfg := p.cfg.ConnConfig.Copy()
	cfg.Database = name
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return classify(pgMsgSecure, fmt.Errorf("connect to database %s as admin: %w", name, err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	ident := pgx.Identifier{name}.Sanitize()
	for _, stmt := range []string{
		"REVOKE CREATE ON SCHEMA public FROM PUBLIC",
		"ALTER SCHEMA public OWNER TO " + ident,
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return classify(pgMsgSecure, fmt.Errorf("secure schema public of database %s: %w", name, err))
		}
	}
	return nil
}

// Deprovision drops env's database, closing its sessions first, and then its
// role. Both may already be gone: a retry after a partial run succeeds.
func (p *Postgres) Deprovision(ctx context.Context, env controlplane.Environment) error {
	name, err := PostgresName(env.ID)
	if err != nil {
		return &Error{Public: pgMsgInvalidID, Err: err}
	}
	ident := pgx.Identifier{name}.Sanitize()
	return p.withEnvironmentLock(ctx, name, pgMsgDropDatabase, func(conn *pgx.Conn) error {
		// WITH (FORCE) ends the database's sessions too; this also ends the
		// role's sessions on other databases.
		if _, err := conn.Exec(ctx, `SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
			WHERE (datname = $1 OR usename = $1) AND pid <> pg_catalog.pg_backend_pid()`, name); err != nil {
			return classify(pgMsgDropDatabase, fmt.Errorf("terminate sessions of %s: %w", name, err))
		}
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			return classify(pgMsgDropDatabase, fmt.Errorf("drop database %s: %w", name, err))
		}
		var exists bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)", name).Scan(&exists); err != nil {
			return classify(pgMsgDropRole, fmt.Errorf("look up role %s: %w", name, err))
		}
		if !exists {
			return nil
		}
		// Objects the role made or was granted in the admin's database (it
		// can connect to databases granting CONNECT to PUBLIC) would block
		// DROP ROLE.
		if _, err := conn.Exec(ctx, "DROP OWNED BY "+ident); err != nil && !hasSQLState(err, sqlstateUndefinedObject) {
			return classify(pgMsgDropRole, fmt.Errorf("drop objects owned by %s: %w", name, err))
		}
		if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+ident); err != nil {
			return classify(pgMsgDropRole, fmt.Errorf("drop role %s: %w", name, err))
		}
		return nil
	})
}

// Rotate gives env's role a new password and returns it. PostgreSQL keeps one
// password per role, so current stops working for new connections at once;
// sessions already open are left running rather than cut mid-transaction.
// current is not needed: setting the new password is what revokes it.
func (p *Postgres) Rotate(ctx context.Context, env controlplane.Environment, current string) (string, error) {
	var secret string
	err := p.RotateAndCommit(ctx, env, current, func(_ context.Context, s string) error {
		secret = s
		return nil
	})
	if err != nil {
		return "", err
	}
	return secret, nil
}

// RotateAndCommit is Rotate calling commit with the new password while it
// holds the environment's advisory lock and before the ALTER ROLE that sets
// the password commits: commit's failure rolls the password back, and
// rotations racing on one environment (on any replica) set the password and
// record it in the same order. If the transaction fails to commit after
// commit succeeded, the recorded secret is not the role's until the next
// rotation; the error says so as a rotation failure.
func (p *Postgres) RotateAndCommit(ctx context.Context, env controlplane.Environment, current string, commit func(ctx context.Context, secret string) error) error {
	name, err := PostgresName(env.ID)
	if err != nil {
		return &Error{Public: pgMsgInvalidID, Err: err}
	}
	password, verifier, err := newPostgresPassword()
	if err != nil {
		return &Error{Public: pgMsgCredential, Err: err}
	}
	ident := pgx.Identifier{name}.Sanitize()
	return p.withEnvironmentLock(ctx, name, pgMsgRotate, func(conn *pgx.Conn) error {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return classify(pgMsgRotate, fmt.Errorf("begin rotation of %s: %w", name, err))
		}
		// A no-op once committed.
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
		_, err = tx.Exec(ctx, "ALTER ROLE "+ident+" WITH PASSWORD "+quoteLiteral(verifier))
		if hasSQLState(err, sqlstateUndefinedObject) {
			return &Error{Public: pgMsgRoleMissing, Err: fmt.Errorf("alter role %s: %w", name, err)}
		}
		if err != nil {
			return classify(pgMsgRotate, fmt.Errorf("alter role %s: %w", name, err))
		}
		if err := commit(ctx, password); err != nil {
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return classify(pgMsgRotate, fmt.Errorf("commit the new password of %s: %w", name, err))
		}
		return nil
	})
}

// postgresURLKeys are the only connection-string keys PostgresConnConfig
// accepts. A database URL may come from a client (bring your own database),
// and other keys (sslrootcert, sslkey, passfile, service, servicefile…) make
// pgx read files on this server; pool_* keys would let a client size pools.
var postgresURLKeys = []string{
	"host", "port", "user", "dbname", "sslmode", "ssl", "sslsni",
	"connect_timeout", "application_name", "target_session_attrs",
}

// PostgresConnConfig returns the pool configuration to reach the database of
// databaseURL with secret as password. The secret is set in the configuration,
// never spliced into the URL, and the URL itself must hold no password, so a
// stored URL never carries a credential. The pool has PostgresDefaultMaxConns
// connections at most. Errors are *Error.
func PostgresConnConfig(databaseURL, secret string) (*pgxpool.Config, error) {
	if !strings.HasPrefix(databaseURL, "postgres://") && !strings.HasPrefix(databaseURL, "postgresql://") {
		return nil, &Error{Public: pgMsgBadURL, Err: errors.New("not a postgres:// or postgresql:// URL")}
	}
	u, err := url.Parse(databaseURL)
	if err != nil {
		// url.Parse errors quote the URL, which may carry a password.
		return nil, &Error{Public: pgMsgBadURL, Err: errors.New("malformed URL")}
	}
	if _, has := u.User.Password(); has || u.Query().Has("password") {
		return nil, &Error{Public: pgMsgURLPassword, Err: errors.New("password in URL")}
	}
	// Vet the keys before anything reads files or the network.
	if _, err := pgx.ParseConfigWithOptions(databaseURL, pgx.ParseConfigOptions{
		ParseConfigOptions: pgconn.ParseConfigOptions{ConnStringAllowedKeys: postgresURLKeys},
	}); err != nil {
		return nil, &Error{Public: pgMsgBadURL, Err: err}
	}
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, &Error{Public: pgMsgBadURL, Err: err}
	}
	// Replaces whatever PGPASSWORD or a pgpass file supplied while parsing.
	cfg.ConnConfig.Password = secret
	cfg.MaxConns = PostgresDefaultMaxConns
	cfg.MinConns = 0
	return cfg, nil
}

// Validate checks a bring-your-own database: it connects to databaseURL with
// secret as password and runs SELECT 1, within 5 seconds. The URL must name
// a network host, not a Unix socket of this server. Errors are *Error whose
// public message does not repeat the URL.
func (p *Postgres) Validate(ctx context.Context, databaseURL, secret string) error {
	return ValidatePostgres(ctx, databaseURL, secret)
}

// ValidatePostgres checks a bring-your-own database answers with the given
// secret; it needs no admin URL, so users can bring databases to a server
// that provisions none.
func ValidatePostgres(ctx context.Context, databaseURL, secret string) error {
	cfg, err := PostgresConnConfig(databaseURL, secret)
	if err != nil {
		return err
	}
	hosts := []string{cfg.ConnConfig.Host}
	for _, fb := range cfg.ConnConfig.Fallbacks {
		hosts = append(hosts, fb.Host)
	}
	for _, h := range hosts {
		if h == "" || strings.HasPrefix(h, "/") || strings.HasPrefix(h, "@") {
			return &Error{Public: pgMsgURLHost, Err: errors.New("unix socket or empty host")}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, postgresValidateTimeout)
	defer cancel()
	cfg.ConnConfig.ConnectTimeout = postgresValidateTimeout
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return &Error{Public: pgMsgValidateFailed, Err: err}
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// What the server says it connected to, not what the URL says: a
	// default (PGDATABASE, the server's own user name) or a name's case
	// cannot hide a database or role envplane manages, and a superuser
	// would reach every database of its cluster, the control plane's too.
	var database, user string
	var powerful bool
	if err := conn.QueryRow(ctx, postgresRoleCheck).Scan(&database, &user, &powerful); err != nil {
		return &Error{Public: pgMsgValidateFailed, Err: err}
	}
	if ManagedPostgresName(database) || ManagedPostgresName(user) {
		return &Error{Public: "the database or role is one envplane manages for an environment", Err: ErrManagedDatabase}
	}
	if powerful {
		return &Error{Public: "the role reaches beyond its own database (a superuser, CREATEROLE, or a member of such a role or of an environment's role); bring a role that owns only its own database", Err: ErrManagedDatabase}
	}
	return nil
}

// postgresRoleCheck answers the database and role a connection reached,
// and whether the role reaches other databases: a superuser or a role that
// may create roles, or a member of one, of an environment's managed role,
// or of a predefined role that reads or writes everything or the server's
// files.
const postgresRoleCheck = `SELECT current_database(), current_user,
	r.rolsuper OR r.rolcreaterole OR EXISTS (
		SELECT 1 FROM pg_roles AS m
		WHERE m.oid <> r.oid AND pg_has_role(r.oid, m.oid, 'MEMBER') AND (
			m.rolsuper OR m.rolcreaterole OR left(lower(m.rolname), 13) = 'envplane_env_' OR
			m.rolname IN ('pg_read_all_data', 'pg_write_all_data', 'pg_read_server_files',
				'pg_write_server_files', 'pg_execute_server_program')))
	FROM pg_roles AS r WHERE r.rolname = current_user`

// ErrManagedDatabase means a database brought by a user is one envplane
// manages, or is reached with a role that reaches those.
var ErrManagedDatabase = errors.New("provision: the database brought is a managed one")

// ManagedPostgresName reports whether name (a database or role) is one the
// Postgres provisioner makes, in any case.
func ManagedPostgresName(name string) bool {
	return strings.HasPrefix(strings.ToLower(name), PostgresNamePrefix)
}

// classify wraps err as *Error with public, except a failure to reach the
// cluster at all, which says so instead: the operator then looks at the
// network, not at privileges.
func classify(public string, err error) error {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return &Error{Public: pgMsgConnect, Err: err}
	}
	return &Error{Public: public, Err: err}
}

// hasSQLState reports whether err is a server error with one of codes.
func hasSQLState(err error, codes ...string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && slices.Contains(codes, pe.Code)
}

// quoteLiteral quotes s as an SQL string literal, for the statements that
// take no bind parameters (CREATE/ALTER ROLE … PASSWORD): quotes are doubled,
// and a string with backslashes becomes an escape string (E'…') with them
// doubled too, so the result is right whatever standard_conforming_strings
// says, as with libpq's PQescapeLiteral. NUL bytes, which no literal can
// hold, are dropped.
func quoteLiteral(s string) string {
	s = strings.ReplaceAll(s, "\x00", "")
	q := "'" + strings.ReplaceAll(s, "'", "''") + "'"
	if strings.Contains(s, `\`) {
		q = "E" + strings.ReplaceAll(q, `\`, `\\`)
	}
	return q
}

// newPostgresPassword returns a new password (32 random bytes, base64url
// without padding: 43 characters that need no escaping in URLs or
// configuration files) and its SCRAM-SHA-256 verifier.
func newPostgresPassword() (password, verifier string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	password = base64.RawURLEncoding.EncodeToString(b)
	salt := make([]byte, scramSaltSize)
	if _, err := rand.Read(salt); err != nil {
		return "", "", err
	}
	verifier, err = scramSHA256Verifier(password, salt, scramIterations)
	if err != nil {
		return "", "", err
	}
	return password, verifier, nil
}

// The engine finds rotation by type assertion; keep Postgres offering it.
var (
	_ Provisioner       = (*Postgres)(nil)
	_ Rotator           = (*Postgres)(nil)
	_ CommittingRotator = (*Postgres)(nil)
)
