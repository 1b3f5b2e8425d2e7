package controlplane

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// CreateToken implements Store. Every field of t is stored as given, times
// truncated to the microsecond, the session ones (RevokeTime, LastUseTime,
// ActiveEnvironmentID) included; an ActiveEnvironmentID that does not exist
// is ErrNotFound. The request id is looked up first and read back again when
// the insert trips a unique rule, so concurrent retries of one create make
// one token and all get it; the expire time is compared at the microsecond,
// the precision it is stored at.
func (s *Postgres) CreateToken(ctx context.Context, t Token) (Token, bool, error) {
	op := "create token " + strconv.Quote(t.Name)
	if len(t.SecretHash) == 0 {
		return Token{}, false, fmt.Errorf("controlplane: %s: empty secret hash", op)
	}
	t.CreateTime, t.ExpireTime = pgTime(t.CreateTime), pgTime(t.ExpireTime)
	t.RevokeTime, t.LastUseTime = pgTime(t.RevokeTime), pgTime(t.LastUseTime)
	// pgx sends a nil slice as NULL; the column holds '{}' for "not limited".
	envIDs := t.EnvironmentIDs
	if envIDs == nil {
		envIDs = []string{}
	}
	if t.RequestID != "" {
		if prev, found, err := s.tokenByRequest(ctx, t); found || err != nil {
			return prev, false, wrapErrIf(op, err)
		}
	}
	for attempt := 1; ; attempt++ {
		stored, err := scanPgToken(s.pool.QueryRow(ctx, `INSERT INTO tokens
			(id, name, organization_id, role, platform_admin, environment_ids, secret_hash,
			 secret_prefix, request_id, created_by, create_time, expire_time, revoke_time,
			 last_use_time, active_environment_id, request_digest)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
			RETURNING `+tokenColumns,
			t.ID, t.Name, nullString(t.OrganizationID), t.Role, t.PlatformAdmin, envIDs, t.SecretHash,
			t.SecretPrefix, nullString(t.RequestID), t.CreatedBy, t.CreateTime,
			pgNullTime(t.ExpireTime), pgNullTime(t.RevokeTime), pgNullTime(t.LastUseTime),
			nullString(t.ActiveEnvironmentID), nullString(t.RequestDigest)))
		if err == nil {
			return stored, true, nil
		}
		if t.RequestID != "" && pgCode(err) == pgUniqueViolation {
			if prev, found, err := s.tokenByRequest(ctx, t); found || err != nil {
				return prev, false, wrapErrIf(op, err)
			}
		}
		switch {
		case pgViolates(err, pgUniqueViolation, pgTokensRequestIDIndex) && attempt < postgresMaxAttempts:
			continue // the winner is gone (its organization deleted) before it could be read back
		case pgViolates(err, pgForeignKeyViolation, pgTokensOrganizationFKey):
			err = ErrOrganizationMissing
		case pgViolates(err, pgForeignKeyViolation, pgTokensActiveEnvironmentFKey):
			// Both foreign keys are checked at the end of the statement,
			// in no order to rely on; a missing organization comes first.
			err = ErrNotFound
			if t.OrganizationID != "" {
				if exists, xerr := s.organizationExists(ctx, t.OrganizationID); xerr != nil {
					err = xerr
				} else if !exists {
					err = ErrOrganizationMissing
				}
			}
		}
		return Token{}, false, wrapErr(op, err)
	}
}

// tokenByRequest finds the token created in t's scope (its organization, or
// the platform) with t.RequestID: found is false when there is none, and the
// error is ErrRequestReused when it was created with other content.
func (s *Postgres) tokenByRequest(ctx context.Context, t Token) (Token, bool, error) {
	// The same expression as the unique index, so the index serves it.
	prev, err := scanPgToken(s.pool.QueryRow(ctx, `SELECT `+tokenColumns+` FROM tokens
		WHERE coalesce(organization_id, '') = $1 AND request_id = $2`, t.OrganizationID, t.RequestID))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Token{}, false, nil
	case err != nil:
		return Token{}, false, err
	case !sameTokenRequest(prev, t):
		return Token{}, true, ErrRequestReused
	}
	return prev, true, nil
}

// GetToken implements Store.
func (s *Postgres) GetToken(ctx context.Context, id string) (Token, error) {
	t, err := scanPgToken(s.pool.QueryRow(ctx,
		`SELECT `+tokenColumns+` FROM tokens WHERE id = $1`, id))
	if err != nil {
		return Token{}, wrapErr("get token "+strconv.Quote(id), err)
	}
	return t, nil
}

// GetTokenBySecretHash implements Store. The hash stays out of errors.
func (s *Postgres) GetTokenBySecretHash(ctx context.Context, hash []byte) (Token, error) {
	if len(hash) == 0 {
		return Token{}, wrapErr("get token by secret hash", ErrNotFound)
	}
	t, err := scanPgToken(s.pool.QueryRow(ctx,
		`SELECT `+tokenColumns+` FROM tokens WHERE secret_hash = $1`, hash))
	if err != nil {
		return Token{}, wrapErr("get token by secret hash", err)
	}
	return t, nil
}

// ListTokens implements Store. An organization that does not exist has no
// tokens, so it yields an empty page rather than an error.
func (s *Postgres) ListTokens(ctx context.Context, organizationID string, page Page) ([]Token, error) {
	op := "list tokens"
	query := `SELECT ` + tokenColumns + ` FROM tokens WHERE id > $1 ORDER BY id LIMIT $2`
	args := []any{page.After, pageLimit(page)}
	if organizationID != "" {
		op += " of " + strconv.Quote(organizationID)
		query = `SELECT ` + tokenColumns + ` FROM tokens
			WHERE organization_id = $3 AND id > $1 ORDER BY id LIMIT $2`
		args = append(args, organizationID)
	}
	rows, err := s.pool.Query(ctx, query, args...)
	out, err := collectPg(rows, err, scanPgToken)
	if err != nil {
		return nil, wrapErr(op, err)
	}
	return out, nil
}

// RevokeToken implements Store. One statement keeps the first revocation, so
// concurrent revocations agree on it. A zero at is refused: stored, it would
// read back as "not revoked".
func (s *Postgres) RevokeToken(ctx context.Context, id string, at time.Time) (Token, error) {
	op := "revoke token " + strconv.Quote(id)
	if at.IsZero() {
		return Token{}, fmt.Errorf("controlplane: %s: zero revoke time", op)
	}
	t, err := scanPgToken(s.pool.QueryRow(ctx, `UPDATE tokens SET revoke_time = coalesce(revoke_time, $1)
		WHERE id = $2 RETURNING `+tokenColumns, pgTime(at), id))
	if err != nil {
		return Token{}, wrapErr(op, err)
	}
	return t, nil
}

// SetActiveEnvironment implements Store. The foreign key checks the
// environment and holds a share lock on it until the update commits, so it
// cannot be deleted in between; an empty environmentID clears the active
// environment.
func (s *Postgres) SetActiveEnvironment(ctx context.Context, tokenID, environmentID string) error {
	op := "set active environment of token " + strconv.Quote(tokenID) + " to " + strconv.Quote(environmentID)
	tag, err := s.pool.Exec(ctx, `UPDATE tokens SET active_environment_id = $1 WHERE id = $2`,
		nullString(environmentID), tokenID)
	if pgViolates(err, pgForeignKeyViolation, pgTokensActiveEnvironmentFKey) {
		err = ErrNotFound
	}
	if err := wantOneRowPg(tag, err); err != nil {
		return wrapErr(op, err)
	}
	return nil
}

// TouchToken implements Store. LastUseTime only moves forward (greatest()
// ignores the NULL of a token never used), so touches that land out of order
// keep the latest use; a zero at is refused.
func (s *Postgres) TouchToken(ctx context.Context, id string, at time.Time) error {
	op := "touch token " + strconv.Quote(id)
	if at.IsZero() {
		return fmt.Errorf("controlplane: %s: zero use time", op)
	}
	tag, err := s.pool.Exec(ctx, `UPDATE tokens SET last_use_time = greatest(last_use_time, $1)
		WHERE id = $2`, pgTime(at), id)
	if err := wantOneRowPg(tag, err); err != nil {
		return wrapErr(op, err)
	}
	return nil
}

// CountTokens implements Store.
func (s *Postgres) CountTokens(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM tokens`).Scan(&n); err != nil {
		return 0, wrapErr("count tokens", err)
	}
	return n, nil
}

// scanPgToken reads one tokens row selected with tokenColumns. An empty
// environment_ids array is nil, so every store hands back the same value
// for "not limited".
func scanPgToken(row pgx.Row) (Token, error) {
	var t Token
	var organizationID, requestID, activeEnvironmentID, requestDigest *string
	var expireTime, revokeTime, lastUseTime *time.Time
	if err := row.Scan(&t.ID, &t.Name, &organizationID, &t.Role, &t.PlatformAdmin, &t.EnvironmentIDs,
		&t.SecretHash, &t.SecretPrefix, &requestID, &t.CreatedBy, &t.CreateTime, &expireTime,
		&revokeTime, &lastUseTime, &activeEnvironmentID, &requestDigest); err != nil {
		return Token{}, err
	}
	t.OrganizationID = derefString(organizationID)
	t.RequestID, t.RequestDigest = derefString(requestID), derefString(requestDigest)
	t.ActiveEnvironmentID = derefString(activeEnvironmentID)
	if len(t.EnvironmentIDs) == 0 {
		t.EnvironmentIDs = nil
	}
	t.CreateTime = t.CreateTime.UTC()
	t.ExpireTime, t.RevokeTime, t.LastUseTime = derefTime(expireTime), derefTime(revokeTime), derefTime(lastUseTime)
	return t, nil
}
