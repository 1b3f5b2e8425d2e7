package controlplane

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// CreateToken implements Store. Every field of t is stored as given, the
// session ones (RevokeTime, LastUseTime, ActiveEnvironmentID) included; an
// ActiveEnvironmentID that does not exist is ErrNotFound. The request id is
// looked up inside the IMMEDIATE transaction, so concurrent retries of one
// create make one token.
func (s *SQLite) CreateToken(ctx context.Context, t Token) (Token, bool, error) {
	op := "create token " + strconv.Quote(t.Name)
	if len(t.SecretHash) == 0 {
		return Token{}, false, fmt.Errorf("controlplane: %s: empty secret hash", op)
	}
	envIDs, err := encodeEnvironmentIDs(t.EnvironmentIDs)
	if err != nil {
		return Token{}, false, fmt.Errorf("controlplane: %s: %w", op, err)
	}
	var stored Token
	var created bool
	err = s.write(ctx, func(tx *sql.Tx) error {
		if t.OrganizationID != "" {
			var orgExists bool
			if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM organizations WHERE id = ?)`,
				t.OrganizationID).Scan(&orgExists); err != nil {
				return err
			}
			if !orgExists {
				return ErrOrganizationMissing
			}
		}
		if t.RequestID != "" {
			// The same expression as the unique index, so the index serves it.
			prev, err := scanToken(tx.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM tokens
				WHERE coalesce(organization_id, '') = ? AND request_id = ?`, t.OrganizationID, t.RequestID))
			switch {
			case err == nil:
				if !sameTokenRequest(prev, t) {
					return ErrRequestReused
				}
				stored = prev
				return nil
			case !errors.Is(err, sql.ErrNoRows):
				return err
			}
		}
		// Checked only for a new token: a retry answers with the stored one.
		if t.ActiveEnvironmentID != "" {
			var envExists bool
			if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM environments WHERE id = ?)`,
				t.ActiveEnvironmentID).Scan(&envExists); err != nil {
				return err
			}
			if !envExists {
				return ErrNotFound
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO tokens
			(id, name, organization_id, role, platform_admin, environment_ids, secret_hash,
			 secret_prefix, request_id, created_by, create_time, expire_time, revoke_time,
			 last_use_time, active_environment_id, request_digest)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			t.ID, t.Name, nullString(t.OrganizationID), t.Role, t.PlatformAdmin, envIDs, t.SecretHash,
			t.SecretPrefix, nullString(t.RequestID), t.CreatedBy, formatTime(t.CreateTime),
			nullTime(t.ExpireTime), nullTime(t.RevokeTime), nullTime(t.LastUseTime),
			nullString(t.ActiveEnvironmentID), nullString(t.RequestDigest))
		switch {
		case isUniqueViolation(err, "index 'tokens_organization_request_id'"):
			// Unreachable while the lookup above runs in the same
			// IMMEDIATE transaction; kept so the rule never leaks as SQL.
			return ErrRequestReused
		case isForeignKeyViolation(err):
			return ErrOrganizationMissing // unreachable after the checks above
		case err != nil:
			return err
		}
		stored, err = scanToken(tx.QueryRowContext(ctx,
			`SELECT `+tokenColumns+` FROM tokens WHERE id = ?`, t.ID))
		created = true
		return err
	})
	if err != nil {
		return Token{}, false, wrapErr(op, err)
	}
	return stored, created, nil
}

// sameTokenRequest reports whether req, a create carrying the request id of
// the stored token in its scope, is a retry of the create that stored it:
// both carry the same request digest, whatever the token became since
// (revoked, used). A row stored without a digest (created before migration
// 0004, or by a caller that sent none) falls back to comparing the
// client-supplied fields: not the id, secret and times the server fills in
// for each attempt; environment ids as an ordered list, expire times as
// instants.
func sameTokenRequest(stored, req Token) bool {
	if stored.RequestDigest != "" {
		return stored.RequestDigest == req.RequestDigest
	}
	a, b := stored, req
	return a.Name == b.Name && a.Role == b.Role && a.PlatformAdmin == b.PlatformAdmin &&
		slices.Equal(a.EnvironmentIDs, b.EnvironmentIDs) && a.ExpireTime.Equal(b.ExpireTime)
}

// GetToken implements Store.
func (s *SQLite) GetToken(ctx context.Context, id string) (Token, error) {
	t, err := scanToken(s.r.QueryRowContext(ctx,
		`SELECT `+tokenColumns+` FROM tokens WHERE id = ?`, id))
	if err != nil {
		return Token{}, wrapErr("get token "+strconv.Quote(id), err)
	}
	return t, nil
}

// GetTokenBySecretHash implements Store. The hash stays out of errors.
func (s *SQLite) GetTokenBySecretHash(ctx context.Context, hash []byte) (Token, error) {
	if len(hash) == 0 {
		return Token{}, wrapErr("get token by secret hash", ErrNotFound)
	}
	t, err := scanToken(s.r.QueryRowContext(ctx,
		`SELECT `+tokenColumns+` FROM tokens WHERE secret_hash = ?`, hash))
	if err != nil {
		return Token{}, wrapErr("get token by secret hash", err)
	}
	return t, nil
}

// ListTokens implements Store. An organization that does not exist has no
// tokens, so it yields an empty page rather than an error.
func (s *SQLite) ListTokens(ctx context.Context, organizationID string, page Page) ([]Token, error) {
	op := "list tokens"
	query := `SELECT ` + tokenColumns + ` FROM tokens WHERE id > ? ORDER BY id LIMIT ?`
	args := []any{page.After, pageLimit(page)}
	if organizationID != "" {
		op += " of " + strconv.Quote(organizationID)
		query = `SELECT ` + tokenColumns + ` FROM tokens
			WHERE organization_id = ? AND id > ? ORDER BY id LIMIT ?`
		args = append([]any{organizationID}, args...)
	}
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, wrapErr(op, err)
	}
	defer rows.Close()
	var out []Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, wrapErr(op, err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, wrapErr(op, err)
	}
	return out, nil
}

// RevokeToken implements Store. A zero at is refused: stored, it would read
// back as "not revoked".
func (s *SQLite) RevokeToken(ctx context.Context, id string, at time.Time) (Token, error) {
	op := "revoke token " + strconv.Quote(id)
	if at.IsZero() {
		return Token{}, fmt.Errorf("controlplane: %s: zero revoke time", op)
	}
	var stored Token
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE tokens SET revoke_time = coalesce(revoke_time, ?)
			WHERE id = ?`, formatTime(at), id)
		if err := wantOneRow(res, err); err != nil {
			return err
		}
		stored, err = scanToken(tx.QueryRowContext(ctx,
			`SELECT `+tokenColumns+` FROM tokens WHERE id = ?`, id))
		return err
	})
	if err != nil {
		return Token{}, wrapErr(op, err)
	}
	return stored, nil
}

// SetActiveEnvironment implements Store. Both rows are checked inside the
// write transaction, so neither can disappear before the update lands; an
// empty environmentID clears the active environment.
func (s *SQLite) SetActiveEnvironment(ctx context.Context, tokenID, environmentID string) error {
	op := "set active environment of token " + strconv.Quote(tokenID) + " to " + strconv.Quote(environmentID)
	err := s.write(ctx, func(tx *sql.Tx) error {
		if environmentID != "" {
			var envExists bool
			if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM environments WHERE id = ?)`,
				environmentID).Scan(&envExists); err != nil {
				return err
			}
			if !envExists {
				return ErrNotFound
			}
		}
		res, err := tx.ExecContext(ctx, `UPDATE tokens SET active_environment_id = ? WHERE id = ?`,
			nullString(environmentID), tokenID)
		if isForeignKeyViolation(err) {
			return ErrNotFound // unreachable after the check above
		}
		return wantOneRow(res, err)
	})
	if err != nil {
		return wrapErr(op, err)
	}
	return nil
}

// TouchToken implements Store. LastUseTime only moves forward, so touches
// that land out of order keep the latest use; a zero at is refused.
func (s *SQLite) TouchToken(ctx context.Context, id string, at time.Time) error {
	op := "touch token " + strconv.Quote(id)
	if at.IsZero() {
		return fmt.Errorf("controlplane: %s: zero use time", op)
	}
	// Stored times sort as text (see timeLayout); max() of a NULL is NULL,
	// hence the coalesce.
	res, err := s.w.ExecContext(ctx, `UPDATE tokens SET last_use_time = max(coalesce(last_use_time, ''), ?)
		WHERE id = ?`, formatTime(at), id)
	if err := wantOneRow(res, err); err != nil {
		return wrapErr(op, err)
	}
	return nil
}

// CountTokens implements Store.
func (s *SQLite) CountTokens(ctx context.Context) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM tokens`).Scan(&n); err != nil {
		return 0, wrapErr("count tokens", err)
	}
	return n, nil
}

// wantOneRow turns the result of an UPDATE or DELETE by primary key into
// ErrNotFound when it matched no row.
func wantOneRow(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// tokenColumns lists the columns scanToken reads, in its order.
const tokenColumns = `id, name, organization_id, role, platform_admin, environment_ids,
	secret_hash, secret_prefix, request_id, created_by, create_time, expire_time,
	revoke_time, last_use_time, active_environment_id, request_digest`

// scanToken reads one tokens row selected with tokenColumns.
func scanToken(row interface{ Scan(...any) error }) (Token, error) {
	var t Token
	var organizationID, requestID, activeEnvironmentID, requestDigest sql.NullString
	var expireTime, revokeTime, lastUseTime sql.NullString
	var envIDs, createTime string
	if err := row.Scan(&t.ID, &t.Name, &organizationID, &t.Role, &t.PlatformAdmin, &envIDs,
		&t.SecretHash, &t.SecretPrefix, &requestID, &t.CreatedBy, &createTime, &expireTime,
		&revokeTime, &lastUseTime, &activeEnvironmentID, &requestDigest); err != nil {
		return Token{}, err
	}
	t.OrganizationID = organizationID.String
	t.RequestID, t.RequestDigest = requestID.String, requestDigest.String
	t.ActiveEnvironmentID = activeEnvironmentID.String
	var err error
	if t.EnvironmentIDs, err = decodeEnvironmentIDs(envIDs); err != nil {
		return Token{}, err
	}
	if t.CreateTime, err = parseTime(createTime); err != nil {
		return Token{}, err
	}
	for _, c := range []struct {
		dst *time.Time
		src sql.NullString
	}{{&t.ExpireTime, expireTime}, {&t.RevokeTime, revokeTime}, {&t.LastUseTime, lastUseTime}} {
		if c.src.Valid {
			if *c.dst, err = parseTime(c.src.String); err != nil {
				return Token{}, err
			}
		}
	}
	return t, nil
}

// encodeEnvironmentIDs renders a token's environment ids for the
// environment_ids column: a JSON array in the given order, "[]" when empty.
func encodeEnvironmentIDs(ids []string) (string, error) {
	if len(ids) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(ids)
	if err != nil {
		return "", fmt.Errorf("encode environment ids: %w", err)
	}
	return string(b), nil
}

// decodeEnvironmentIDs reads the environment_ids column back; an empty array
// is nil, so every store hands back the same value for "not limited".
func decodeEnvironmentIDs(s string) ([]string, error) {
	var ids []string
	if err := json.Unmarshal([]byte(s), &ids); err != nil {
		return nil, fmt.Errorf("bad stored environment ids %q: %w", s, err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	return ids, nil
}
