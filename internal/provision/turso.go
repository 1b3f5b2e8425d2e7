package provision

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/envplane/envplane/internal/controlplane"
)

// TursoDefaultAPIURL is the Turso Platform API's base URL.
const TursoDefaultAPIURL = "https://api.turso.tech"

// TursoNamePrefix starts the name of every database the Turso provisioner
// makes, so an operator can tell them apart from the organization's others.
const TursoNamePrefix = "env-"

// tursoCallTimeout bounds each Platform API call (the caller's context may
// bound it further).
const tursoCallTimeout = 15 * time.Second

// tursoHTTPTimeout is the timeout of the default HTTP client.
const tursoHTTPTimeout = 30 * time.Second

// tursoMaxBody bounds the part of an API answer that is read.
const tursoMaxBody = 1 << 20

// Public messages of the Turso provisioner's errors: none names the
// organization, the API, a database or a token.
const (
	tursoMsgInvalidID    = "the environment id is not valid for a Turso database"
	tursoMsgUnauthorized = "the Turso organization refused the API token"
	tursoMsgQuota        = "the Turso quota is exhausted"
	tursoMsgUnavailable  = "the Turso API is unavailable"
	tursoMsgCreate       = "could not create the Turso database"
	tursoMsgDelete       = "could not remove the Turso database"
	tursoMsgRotate       = "could not rotate the Turso database's token"
)

// TursoConfig configures a Turso provisioner.
type TursoConfig struct {
	// Organization is the slug of the organization the databases go in.
	Organization string
	// Group is the group (location and replicas) of the databases.
	Group string
	// APIToken is a Platform API token of the organization.
	APIToken string
	// APIURL is the Platform API's base URL; "" means TursoDefaultAPIURL.
	APIURL string
	// URLScheme is the scheme of the database URLs Provision returns:
	// "libsql" (the default), "https" or "http" (for a local server).
	URLScheme string
	// HTTPClient makes the API calls; nil means a client with a 30-second
	// timeout.
	HTTPClient *http.Client
}

// Turso provisions, per environment, a database of one Turso organization
// through the Platform API, with a full-access, non-expiring database token
// as the environment's secret.
//
// Turso cannot revoke one database token: the only revocation is rotating
// the database's signing keys (…/auth/rotate), which invalidates every token
// of the database at once, including any minted outside envplane. So Rotate
// and a re-Provision both invalidate all of the database's tokens and mint a
// new one; between the two calls no token works. For the same reason Turso
// is no CommittingRotator: the old token is dead before the new one exists,
// so a failed commit cannot leave the old one valid.
type Turso struct {
	org         string
	group       string
	token       string
	api         string // the base URL, without a trailing slash
	scheme      string
	client      *http.Client
	callTimeout time.Duration
}

var (
	_ Provisioner = (*Turso)(nil)
	_ Rotator     = (*Turso)(nil)
)

// NewTurso returns a Turso provisioner; it makes no API call.
func NewTurso(cfg TursoConfig) (*Turso, error) {
	switch {
	case strings.TrimSpace(cfg.Organization) == "":
		return nil, errors.New("provision: turso: the organization is required")
	case strings.TrimSpace(cfg.Group) == "":
		return nil, errors.New("provision: turso: the group is required")
	case strings.TrimSpace(cfg.APIToken) == "":
		return nil, errors.New("provision: turso: the API token is required")
	}
	raw := cfg.APIURL
	if raw == "" {
		raw = TursoDefaultAPIURL
	}
	api, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || (api.Scheme != "https" && api.Scheme != "http") || api.Host == "" ||
		api.User != nil || api.RawQuery != "" || api.Fragment != "" {
		// The URL is configuration, not a secret, but keep it out anyway.
		return nil, errors.New("provision: turso: the API URL must be an http:// or https:// URL without user, query or fragment")
	}
	scheme := cfg.URLScheme
	switch scheme {
	case "":
		scheme = "libsql"
	case "libsql", "https", "http":
	default:
		return nil, fmt.Errorf("provision: turso: the URL scheme must be libsql, https or http, not %q", scheme)
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: tursoHTTPTimeout}
	}
	return &Turso{
		org:         cfg.Organization,
		group:       cfg.Group,
		token:       cfg.APIToken,
		api:         api.String(),
		scheme:      scheme,
		client:      client,
		callTimeout: tursoCallTimeout,
	}, nil
}

// TursoName returns the database name of an environment: TursoNamePrefix
// and the 32 hex digits of its UUID, 36 characters of lowercase letters,
// digits and dashes, well within Turso's limits.
func TursoName(environmentID string) (string, error) {
	id, err := uuid.Parse(environmentID)
	if err != nil {
		return "", fmt.Errorf("environment id %q is not a UUID: %w", environmentID, err)
	}
	return TursoNamePrefix + hex.EncodeToString(id[:]), nil
}

// tursoDatabase is the database object of the API's answers.
type tursoDatabase struct {
	Name     string `json:"Name"`
	DbID     string `json:"DbId"`
	Hostname string `json:"Hostname"`
}

// Provision creates env's database, or finds it when an earlier attempt
// created it (the API answers 409), and mints a full-access token for it.
// When the database already existed its tokens are invalidated first, so
// that a token minted by an attempt that crashed before its result was
// stored stops working: the Result's Secret is then the one valid token,
// as a re-provisioned PostgreSQL role has only its new password.
func (t *Turso) Provision(ctx context.Context, env controlplane.Environment) (Result, error) {
	name, err := TursoName(env.ID)
	if err != nil {
		return Result{}, &Error{Public: tursoMsgInvalidID, Err: err}
	}
	var created struct {
		Database tursoDatabase `json:"database"`
	}
	body := map[string]string{"name": name, "group": t.group}
	status, err := t.call(ctx, http.MethodPost, t.orgPath("databases"), nil, body, &created)
	db := created.Database
	switch {
	case err == nil:
	case status == http.StatusConflict:
		// Created by an earlier attempt: look it up, and invalidate the
		// tokens that attempt may have minted.
		var got struct {
			Database tursoDatabase `json:"database"`
		}
		if _, err := t.call(ctx, http.MethodGet, t.dbPath(name), nil, nil, &got); err != nil {
			return Result{}, t.publicError(tursoMsgCreate, fmt.Errorf("retrieve existing database %s: %w", name, err))
		}
		db = got.Database
		if err := t.rotateKeys(ctx, name); err != nil {
			return Result{}, t.publicError(tursoMsgCreate, err)
		}
	default:
		return Result{}, t.publicError(tursoMsgCreate, fmt.Errorf("create database %s: %w", name, err))
	}
	dbURL, err := t.databaseURL(db.Hostname)
	if err != nil {
		return Result{}, &Error{Public: tursoMsgCreate, Err: fmt.Errorf("database %s: %w", name, err)}
	}
	jwt, err := t.mintToken(ctx, name)
	if err != nil {
		return Result{}, t.publicError(tursoMsgCreate, err)
	}
	return Result{DatabaseURL: dbURL, Secret: jwt}, nil
}

// Deprovision deletes env's database; one already gone is success.
func (t *Turso) Deprovision(ctx context.Context, env controlplane.Environment) error {
	name, err := TursoName(env.ID)
	if err != nil {
		return &Error{Public: tursoMsgInvalidID, Err: err}
	}
	status, err := t.call(ctx, http.MethodDelete, t.dbPath(name), nil, nil, nil)
	if err != nil && status != http.StatusNotFound {
		return t.publicError(tursoMsgDelete, fmt.Errorf("delete database %s: %w", name, err))
	}
	return nil
}

// Rotate invalidates every token of env's database, current and any other
// (Turso cannot revoke a single one), then mints and returns a new
// full-access token. current is not needed. If minting fails after the
// rotation, no token works until a later Rotate succeeds.
func (t *Turso) Rotate(ctx context.Context, env controlplane.Environment, current string) (string, error) {
	name, err := TursoName(env.ID)
	if err != nil {
		return "", &Error{Public: tursoMsgInvalidID, Err: err}
	}
	if err := t.rotateKeys(ctx, name); err != nil {
		return "", t.publicError(tursoMsgRotate, err)
	}
	jwt, err := t.mintToken(ctx, name)
	if err != nil {
		return "", t.publicError(tursoMsgRotate, err)
	}
	return jwt, nil
}

// Validate checks a bring-your-own libSQL database answers with token (see
// ValidateTurso); it makes no Platform API call.
func (t *Turso) Validate(ctx context.Context, databaseURL, token string) error {
	return ValidateTurso(ctx, databaseURL, token)
}

// rotateKeys invalidates every token of database name.
func (t *Turso) rotateKeys(ctx context.Context, name string) error {
	if _, err := t.call(ctx, http.MethodPost, t.dbPath(name)+"/auth/rotate", nil, nil, nil); err != nil {
		return fmt.Errorf("invalidate the tokens of database %s: %w", name, err)
	}
	return nil
}

// mintToken creates a full-access, non-expiring token for database name.
func (t *Turso) mintToken(ctx context.Context, name string) (string, error) {
	q := url.Values{"expiration": {"never"}, "authorization": {"full-access"}}
	var out struct {
		JWT string `json:"jwt"`
	}
	if _, err := t.call(ctx, http.MethodPost, t.dbPath(name)+"/auth/tokens", q, nil, &out); err != nil {
		return "", fmt.Errorf("create a token for database %s: %w", name, err)
	}
	if out.JWT == "" {
		return "", fmt.Errorf("create a token for database %s: the answer holds no token", name)
	}
	return out.JWT, nil
}

// databaseURL is the URL of the database at hostname, which must be a bare
// host (with an optional port).
func (t *Turso) databaseURL(hostname string) (string, error) {
	if hostname == "" {
		return "", errors.New("the API answered no hostname")
	}
	u := &url.URL{Scheme: t.scheme, Host: hostname}
	parsed, err := url.Parse(u.String())
	if err != nil || parsed.Host != hostname || parsed.User != nil || parsed.Path != "" || strings.ContainsAny(hostname, "/@?#") {
		return "", fmt.Errorf("the API answered an invalid hostname %q", hostname)
	}
	return u.String(), nil
}

func (t *Turso) orgPath(rest string) string {
	return "/v1/organizations/" + url.PathEscape(t.org) + "/" + rest
}

func (t *Turso) dbPath(name string) string {
	return t.orgPath("databases/" + url.PathEscape(name))
}

// tursoAPIError is an API answer other than 200, or a failure to get one.
type tursoAPIError struct {
	Method, Path string
	Status       int    // 0: no answer
	Message      string // the answer's "error", if any
	Err          error  // transport failure or unreadable answer
}

func (e *tursoAPIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "turso api %s %s", e.Method, e.Path)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": status %d", e.Status)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *tursoAPIError) Unwrap() error { return e.Err }

// call sends one API request, bounded by callTimeout, and decodes a 200
// answer into out (when not nil). It returns the status (0 when none came)
// and, unless it was 200 and decoded, a *tursoAPIError.
func (t *Turso) call(ctx context.Context, method, path string, query url.Values, in, out any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, t.callTimeout)
	defer cancel()
	fail := func(status int, msg string, err error) (int, error) {
		return status, &tursoAPIError{Method: method, Path: path, Status: status, Message: msg, Err: err}
	}
	target := t.api + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fail(0, "", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return fail(0, "", err)
	}
	req.Header.Set("Authorization", "Bearer "+t.token)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return fail(0, "", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, tursoMaxBody))
	if err != nil {
		return fail(resp.StatusCode, "", fmt.Errorf("read the answer: %w", err))
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		msg := ""
		if json.Unmarshal(raw, &e) == nil {
			msg = e.Error
		}
		return fail(resp.StatusCode, msg, nil)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fail(resp.StatusCode, "", fmt.Errorf("decode the answer: %w", err))
		}
	}
	return resp.StatusCode, nil
}

// publicError wraps err as *Error: the token refused, the quota exhausted
// or the API unreachable say so, anything else says public. The token is
// scrubbed from the cause, should a proxy or the API have echoed it.
func (t *Turso) publicError(public string, err error) error {
	cause := err
	if strings.Contains(err.Error(), t.token) {
		cause = errors.New(strings.ReplaceAll(err.Error(), t.token, "[api token]"))
	}
	var ae *tursoAPIError
	if !errors.As(err, &ae) {
		return &Error{Public: public, Err: cause}
	}
	msg := strings.ToLower(ae.Message)
	switch {
	case ae.Status == 0, ae.Status >= 500:
		return &Error{Public: tursoMsgUnavailable, Err: cause}
	case ae.Status == http.StatusPaymentRequired,
		ae.Status >= 400 && (strings.Contains(msg, "quota") || strings.Contains(msg, "limit")):
		return &Error{Public: tursoMsgQuota, Err: cause}
	case ae.Status == http.StatusUnauthorized, ae.Status == http.StatusForbidden:
		return &Error{Public: tursoMsgUnauthorized, Err: cause}
	}
	return &Error{Public: public, Err: cause}
}
