package environment

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/connect"

	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/hostname"
	"github.com/envplane/envplane/internal/ownership"
	"github.com/envplane/envplane/internal/reqlog"
)

// ErrorInfo reasons of hostname ownership.
const (
	ReasonHostnameReserved         = "HOSTNAME_RESERVED"
	ReasonHostnameInPlatform       = "HOSTNAME_IN_PLATFORM_NAMESPACE"
	ReasonHostnameNotVerified      = "HOSTNAME_NOT_VERIFIED"
	ReasonHostnameCheckUnavailable = "HOSTNAME_CHECK_UNAVAILABLE"
	ReasonHostnameNothingToVerify  = "HOSTNAME_NOTHING_TO_VERIFY"
)

// HostnameChecks configures the proofs of custom hostnames.
type HostnameChecks struct {
	// Checker runs one check.
	Checker *ownership.Checker
	// Interval is how often a verified custom hostname is checked again;
	// pending ones back off from a few seconds up to it.
	Interval time.Duration
	// Grace is how long a verified hostname keeps routing once it stops
	// proving ownership.
	Grace time.Duration
	// APIHostnames are the API's own names, never an environment's.
	APIHostnames []string
}

// checkTimeout bounds one check (DNS, then HTTP).
const checkTimeout = 15 * time.Second

// generatedAttempts bounds how many distinct generated names a create or an
// update tries before giving up.
const generatedAttempts = 4

// claim is what a caller asks an environment's hostname to be: the name and
// the proof it starts with.
type claim struct {
	name  string
	proof controlplane.HostnameProof
	// generated names are derived again, with a suffix, when taken.
	generated bool
}

// claimHostname decides the hostname an environment of org with slug gets
// when caller asks for requested (nil or "": the generated name). Names
// under the root domain are the platform's: only generated ones live there.
// Reserved names are refused. A custom name set by a platform admin is
// verified at once; set by anyone else it is pending, with a fresh challenge.
func (s *Service) claimHostname(caller *auth.Principal, orgSlug, envSlug string, requested *string) (claim, error) {
	now := s.now()
	if requested == nil || *requested == "" {
		name, err := hostname.Normalize(hostname.Generate(orgSlug, envSlug, s.rootDomain))
		if err != nil {
			return claim{}, invalidHostname("hostname", errors.New("the generated hostname {organization}-{environment}."+s.rootDomain+
				" is not a valid DNS name (a label over 63 characters?); set hostname explicitly"))
		}
		return claim{name: name, generated: true, proof: controlplane.HostnameProof{
			State: controlplane.HostnameVerified, Method: controlplane.VerifiedGenerated, VerifyTime: now}}, nil
	}
	name, err := hostname.Normalize(*requested)
	if err != nil {
		return claim{}, invalidHostname("hostname", err)
	}
	inPlatform := hostname.Under(name, s.rootDomain)
	if !inPlatform {
		if err := hostname.Reserved(name, s.checks.APIHostnames); err != nil {
			return claim{}, apierr.InvalidArgument(ReasonHostnameReserved, err.Error(),
				apierr.FieldViolation{Field: "hostname", Description: "a reserved name"})
		}
	}
	if inPlatform || name == s.rootDomain {
		return claim{}, apierr.InvalidArgument(ReasonHostnameInPlatform,
			"hostnames under "+s.rootDomain+" are the platform's own: environments get {organization}-{environment}."+s.rootDomain+
				" generated; a custom hostname must be a domain outside it",
			apierr.FieldViolation{Field: "hostname", Description: "under the platform's root domain " + s.rootDomain})
	}
	if caller.PlatformAdmin {
		return claim{name: name, proof: controlplane.HostnameProof{
			State: controlplane.HostnameVerified, Method: controlplane.VerifiedOperator, VerifyTime: now}}, nil
	}
	return claim{name: name, proof: controlplane.HostnameProof{
		State: controlplane.HostnamePending, Token: ownership.NewToken(), NextCheckTime: now,
		Message: "publish the challenge, then call VerifyHostname",
	}}, nil
}

// alternative returns the attempt-th generated name derived from name when
// name is taken: its first label gets a short suffix from the environment id,
// cut to fit a label. Two organizations' slugs can meet in one name (acme +
// dev-x and acme-dev + x); neither learns of the other.
func (s *Service) alternative(name, environmentID string, attempt int) string {
	label := strings.TrimSuffix(name, "."+s.rootDomain)
	sum := sha256.Sum256([]byte(environmentID + "/" + string(rune('0'+attempt))))
	suffix := "-" + hex.EncodeToString(sum[:])[:6]
	if len(label)+len(suffix) > hostname.MaxLabelLength {
		label = strings.TrimRight(label[:hostname.MaxLabelLength-len(suffix)], "-")
	}
	return label + suffix + "." + s.rootDomain
}

// VerifyHostname implements EnvironmentService.VerifyHostname.
func (s *Service) VerifyHostname(ctx context.Context, req *connect.Request[environmentv1.VerifyHostnameRequest]) (*connect.Response[environmentv1.VerifyHostnameResponse], error) {
	env, err := s.enter(ctx, req.Msg.GetId(), auth.RoleAdmin)
	if err != nil {
		return nil, err
	}
	caller := auth.From(ctx)
	if req.Msg.GetSkipCheck() {
		if err := caller.RequirePlatformAdmin(); err != nil {
			return nil, err
		}
		if env.Proof.Routes() && !provenByCheck(env.Proof.Method) {
			return connect.NewResponse(&environmentv1.VerifyHostnameResponse{Environment: s.environmentToProto(env)}), nil
		}
		now := s.now()
		proof := controlplane.HostnameProof{State: controlplane.HostnameVerified, Method: controlplane.VerifiedOperator,
			Token: env.Proof.Token, VerifyTime: now, CheckTime: env.Proof.CheckTime}
		updated, err := s.store.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{
			IfHostname: &controlplane.HostnameClaim{Hostname: env.Hostname, Token: env.Proof.Token},
			Proof:      &proof, TakeHostname: true,
		})
		if err != nil {
			return nil, s.hostnameWriteError(ctx, err)
		}
		s.publish(ctx, routingEvents(updated, "")...)
		reqlog.Logger(ctx, s.log).Info("hostname marked verified by an operator", "environment_id", env.ID, "hostname", env.Hostname)
		return connect.NewResponse(&environmentv1.VerifyHostnameResponse{Environment: s.environmentToProto(updated)}), nil
	}
	if env.Proof.Token == "" || (env.Proof.Routes() && !provenByCheck(env.Proof.Method)) {
		// Generated, operator and migrated names have no challenge to check:
		// a failed check must not start a grace period an operator's word
		// ended (an operator-verified name keeps the token it was claimed
		// with, and would otherwise lapse a day after an owner's try).
		return nil, apierr.New(connect.CodeFailedPrecondition, ReasonHostnameNothingToVerify,
			"the hostname was verified by "+methodOrNone(env.Proof.Method)+" and has no challenge to check", "hostname", env.Hostname)
	}
	updated, checkErr, err := s.check(ctx, env)
	for attempt := 1; errors.Is(err, controlplane.ErrHostnameMoved) && attempt < 3; attempt++ {
		// Another outcome was recorded while this check ran (the background
		// loop's, or a concurrent call's): for the same claim, look again.
		fresh, gerr := s.store.GetEnvironment(ctx, env.ID)
		if gerr != nil {
			return nil, s.hostnameWriteError(ctx, gerr)
		}
		if fresh.Hostname != env.Hostname || fresh.Proof.Token != env.Proof.Token {
			break // the claim itself changed
		}
		if fresh.Proof.Routes() {
			return connect.NewResponse(&environmentv1.VerifyHostnameResponse{Environment: s.environmentToProto(fresh)}), nil
		}
		env = fresh
		updated, checkErr, err = s.check(ctx, env)
	}
	if err != nil {
		return nil, s.hostnameWriteError(ctx, err)
	}
	switch {
	case errors.Is(checkErr, ownership.ErrUnreachable):
		return nil, apierr.New(connect.CodeUnavailable, ReasonHostnameCheckUnavailable,
			"the check could not run: "+checkErr.Error()+"; retry", "hostname", env.Hostname)
	case checkErr != nil:
		return nil, apierr.New(connect.CodeFailedPrecondition, ReasonHostnameNotVerified,
			"ownership of "+env.Hostname+" is not proven: "+checkErr.Error(),
			"hostname", env.Hostname, "dns_name", ownership.DNSName(env.Hostname), "state", updated.Proof.State)
	}
	return connect.NewResponse(&environmentv1.VerifyHostnameResponse{Environment: s.environmentToProto(updated)}), nil
}

// provenByCheck reports whether a hostname verified by method stays
// verified only while its checks pass (DNS or HTTP), as opposed to by the
// platform's word (generated, operator, migrated).
func provenByCheck(method string) bool {
	return method == controlplane.VerifiedDNS || method == controlplane.VerifiedHTTP
}

func methodOrNone(m string) string {
	if m == "" {
		return "nobody"
	}
	return m
}

// hostnameWriteError maps the failure to record a check's outcome.
func (s *Service) hostnameWriteError(ctx context.Context, err error) error {
	if errors.Is(err, controlplane.ErrHostnameMoved) {
		return apierr.New(connect.CodeAborted, ReasonHostnameNotVerified,
			"the environment's hostname or its verification changed while it was checked; read the environment, and check again if it is still pending")
	}
	return s.notFound(ctx, err, environmentNotFound())
}

// check runs one check of env's hostname and records its outcome, if the
// claim is still the one checked. It returns the environment as recorded,
// the check's failure (nil when proven) and the failure to record it.
func (s *Service) check(ctx context.Context, env controlplane.Environment) (controlplane.Environment, error, error) {
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	method, checkErr := s.checks.Checker.Check(cctx, env.Hostname, env.Proof.Token)
	cancel()
	now := s.now()
	proof := s.outcome(env.Proof, method, checkErr, now)
	read := env.Proof
	patch := controlplane.EnvironmentPatch{
		IfHostname: &controlplane.HostnameClaim{Hostname: env.Hostname, Token: env.Proof.Token, Proof: &read},
		Proof:      &proof, TakeHostname: proof.Routes(),
	}
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer wcancel()
	updated, err := s.store.UpdateEnvironment(wctx, env.ID, patch)
	if err != nil {
		return controlplane.Environment{}, checkErr, err
	}
	if proof.Routes() != env.Proof.Routes() {
		s.publish(wctx, routingEvents(updated, "")...)
		log := reqlog.Logger(ctx, s.log).With("environment_id", env.ID, "hostname", env.Hostname)
		if proof.Routes() {
			log.Info("hostname verified", "method", method)
		} else {
			log.Warn("hostname stopped routing: ownership not proven within the grace period", "message", proof.Message)
		}
	}
	return updated, checkErr, nil
}

// outcome is the proof p becomes after a check at now that proved it by
// method, or failed with checkErr. A verified hostname that fails keeps
// routing for the grace period, then lapses; failures back off.
func (s *Service) outcome(p controlplane.HostnameProof, method string, checkErr error, now time.Time) controlplane.HostnameProof {
	p.CheckTime = now
	if checkErr == nil {
		p.State, p.Method, p.VerifyTime, p.Failures, p.Message, p.FailingSince = controlplane.HostnameVerified, method, now, 0, "", time.Time{}
		p.NextCheckTime = now.Add(s.checks.Interval)
		return p
	}
	p.Failures++
	p.Message = checkErr.Error()
	p.NextCheckTime = now.Add(s.backoff(p.Failures))
	if p.State == controlplane.HostnameVerified {
		if p.FailingSince.IsZero() {
			p.FailingSince = now
		}
		end := p.FailingSince.Add(s.checks.Grace)
		if !now.Before(end) {
			p.State = controlplane.HostnameLapsed
			p.Message = "ownership not proven since " + p.FailingSince.Format(time.RFC3339) + ": " + checkErr.Error()
		} else if p.NextCheckTime.After(end) {
			p.NextCheckTime = end // check again when the grace ends, to lapse on time
		}
	}
	return p
}

// backoff is the wait after the n-th failed check in a row: from a few
// seconds (or the interval, if shorter) doubling up to the interval.
func (s *Service) backoff(n int) time.Duration {
	d := min(5*time.Second, s.checks.Interval)
	for i := 1; i < n && d < s.checks.Interval; i++ {
		d *= 2
	}
	return min(d, s.checks.Interval)
}

// RunHostnameChecks re-checks due hostname claims until ctx ends: pending
// ones with backoff, verified ones every interval. With several replicas, one
// at a time runs a round (LockHostnameChecks).
func (s *Service) RunHostnameChecks(ctx context.Context) {
	poll := min(max(s.checks.Interval/4, 50*time.Millisecond), 10*time.Second)
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.checkRound(ctx)
	}
}

// checkRound checks every claim due now, if this process holds the lock.
func (s *Service) checkRound(ctx context.Context) {
	log := s.log.With("component", "hostname-checks")
	release, ok, err := s.store.LockHostnameChecks(ctx)
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("hostname checks skipped: the control plane cannot be reached")
			log.Debug("hostname check lock failure", "error", err)
		}
		return
	}
	if !ok {
		return
	}
	defer release()
	due, err := s.store.ListHostnameChecks(ctx, s.now(), 100)
	if err != nil {
		if ctx.Err() == nil {
			log.Debug("listing due hostname checks failed", "error", err)
		}
		return
	}
	for _, env := range due {
		if ctx.Err() != nil {
			return
		}
		if _, _, err := s.check(ctx, env); err != nil && !errors.Is(err, controlplane.ErrHostnameMoved) &&
			!errors.Is(err, controlplane.ErrNotFound) {
			log.Debug("recording a hostname check failed", "environment_id", env.ID, "error", err)
		}
	}
}

// SweepPlatformNamespace gives every environment that holds a hostname
// under the root domain other than its own generated one (bound before
// the platform namespace existed: "migrated") its generated name, so that
// only generated names live there and their organizations can have them.
// It runs at start; replicas racing it change each environment once (the
// patch is conditional on the hostname it read).
func (s *Service) SweepPlatformNamespace(ctx context.Context) {
	log := s.log.With("component", "platform-namespace")
	err := controlplane.EachEnvironment(ctx, s.store, func(org controlplane.Organization, env controlplane.Environment) bool {
		if env.Proof.Method != controlplane.VerifiedMigrated || !hostname.Under(env.Hostname, s.rootDomain) {
			return true
		}
		generated, err := hostname.Normalize(hostname.Generate(org.Slug, env.Slug, s.rootDomain))
		if err == nil && generated != env.Hostname {
			s.regenerate(ctx, env, generated, log)
		}
		return ctx.Err() == nil
	})
	if err != nil {
		log.Debug("sweeping the platform namespace stopped", "error", err)
	}
}

// regenerate moves env from a hostname under the root domain that is not
// its own to its generated one (or an alternative when that is taken).
func (s *Service) regenerate(ctx context.Context, env controlplane.Environment, generated string, log *slog.Logger) {
	name := generated
	for attempt := 0; attempt <= 4; attempt++ {
		if attempt > 0 {
			name = s.alternative(generated, env.ID, attempt)
		}
		proof := controlplane.HostnameProof{State: controlplane.HostnameVerified, Method: controlplane.VerifiedGenerated, VerifyTime: s.now()}
		after, err := s.store.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{
			IfHostname: &controlplane.HostnameClaim{Hostname: env.Hostname, Token: env.Proof.Token},
			Hostname:   &name, Proof: &proof,
		})
		switch {
		case errors.Is(err, controlplane.ErrHostnameTaken):
			continue
		case err != nil:
			if !errors.Is(err, controlplane.ErrHostnameMoved) && !errors.Is(err, controlplane.ErrNotFound) {
				log.Debug("moving an environment off another's generated hostname failed", "environment_id", env.ID, "error", err)
			}
			return
		}
		s.publish(ctx, routingEvents(after, env.Hostname)...)
		log.Warn("an environment held a hostname under the platform's root domain that is not its generated one; it now has its own",
			"environment_id", env.ID, "old_hostname", env.Hostname, "hostname", name)
		return
	}
}

// ResolveHostname implements EnvironmentService.ResolveHostname, normalizing
// the hostname exactly as the router normalizes a Host header.
func (s *Service) ResolveHostname(ctx context.Context, req *connect.Request[environmentv1.ResolveHostnameRequest]) (*connect.Response[environmentv1.ResolveHostnameResponse], error) {
	h, ok := hostname.FromHost(req.Msg.GetHostname())
	if !ok {
		return nil, invalidHostname("hostname", errors.New("hostname: not a DNS name that can route to an environment"))
	}
	notFound := apierr.New(connect.CodeNotFound, ReasonHostnameNotFound, "no environment has this hostname", "hostname", h)
	env, err := s.store.GetEnvironmentByHostname(ctx, h)
	if err != nil {
		return nil, s.notFound(ctx, err, notFound)
	}
	caller := auth.From(ctx)
	if !caller.InOrganization(env.OrganizationID) {
		return nil, notFound
	}
	if err := caller.RequireEnvironment(env.ID); err != nil {
		return nil, err
	}
	return connect.NewResponse(&environmentv1.ResolveHostnameResponse{
		Hostname:       h,
		EnvironmentId:  env.ID,
		OrganizationId: env.OrganizationID,
		Environment:    s.environmentToProto(env),
	}), nil
}
