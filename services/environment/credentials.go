package environment

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"

	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/provision"
	"github.com/envplane/envplane/internal/reqlog"
	"github.com/envplane/envplane/internal/secrets"
)

// RotateCredential implements EnvironmentService.RotateCredential: the
// engine makes a new secret valid and the old one invalid (a new password
// for the environment's role), the sealed credential is replaced, and every
// routing cache drops the old one. A retry after a failure in between
// converges: the engine does not need the old secret.
func (s *Service) RotateCredential(ctx context.Context, req *connect.Request[environmentv1.RotateCredentialRequest]) (*connect.Response[environmentv1.RotateCredentialResponse], error) {
	env, err := s.enter(ctx, req.Msg.GetId(), auth.RoleAdmin)
	if err != nil {
		return nil, err
	}
	notRotatable := func(why string) error {
		return apierr.New(connect.CodeFailedPrecondition, ReasonCredentialNotRotatable, why, "driver", env.Driver)
	}
	if env.ExternalDatabase {
		return nil, notRotatable("the database was brought by you: change its password there, then recreate the environment with the new one")
	}
	if env.Status != controlplane.StatusActive && env.Status != controlplane.StatusSuspended {
		return nil, apierr.New(connect.CodeFailedPrecondition, ReasonEnvironmentNotReady,
			"only an active or suspended environment's credential can rotate; this one is "+env.Status, "status", env.Status)
	}
	p, err := s.provisioner.For(env.Driver)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	rotator, ok := p.(provision.Rotator)
	if !ok {
		return nil, notRotatable("environments with the " + env.Driver + " driver have no database credential to rotate")
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), provisionTimeout)
	defer cancel()
	current, err := s.open(env)
	if err != nil {
		return nil, s.toConnect(ctx, err, "environment_id", env.ID)
	}
	var now time.Time
	var cred controlplane.Credential
	// store seals and records the new secret. A CommittingRotator runs it
	// under the engine's lock, before the new secret takes effect, so racing
	// rotations cannot leave stored a secret the engine no longer accepts.
	var storeErr error
	store := func(ctx context.Context, secret string) error {
		now = s.now()
		if cred, storeErr = s.seal(env.ID, secret, now); storeErr != nil {
			return storeErr
		}
		updated, err := s.store.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{Credential: &cred})
		if err != nil {
			storeErr = err
			return err
		}
		env = updated
		return nil
	}
	if committing, ok := rotator.(provision.CommittingRotator); ok {
		err = committing.RotateAndCommit(ctx, env, current, store)
	} else {
		var secret string
		if secret, err = rotator.Rotate(ctx, env, current); err == nil {
			err = store(ctx, secret)
		}
	}
	if storeErr != nil {
		// The environment was deleted meanwhile, or the store failed: the
		// engine kept the old secret (or a retry converges).
		if errors.Is(storeErr, controlplane.ErrNotFound) {
			return nil, environmentNotFound()
		}
		return nil, s.toConnect(ctx, storeErr, "environment_id", env.ID)
	}
	if err != nil {
		reqlog.Logger(ctx, s.log).Debug("rotation failure cause", "environment_id", env.ID, "error", err)
		// Only a CommittingRotator keeps the old secret valid on failure; a
		// Turso rotation invalidates every token before minting the new one.
		hint := "; the old credential is still valid, retry"
		if _, committing := rotator.(provision.CommittingRotator); !committing {
			hint = "; the database may accept no credential until a rotation succeeds: retry"
		}
		return nil, apierr.New(connect.CodeUnavailable, ReasonRotationFailed, provision.PublicMessage(err)+hint)
	}
	s.publish(ctx, invalidate.Event{Kind: invalidate.KindCredential, EnvironmentID: env.ID, OrganizationID: env.OrganizationID})
	reqlog.Logger(ctx, s.log).Info("credential rotated", "environment_id", env.ID, "key_id", cred.KeyID)
	return connect.NewResponse(&environmentv1.RotateCredentialResponse{
		Environment: s.environmentToProto(env),
		RotateTime:  timestamp(now),
	}), nil
}

// seal encrypts an environment's secret, bound to the environment id so a
// ciphertext copied onto another row does not open.
func (s *Service) seal(environmentID, secret string, now time.Time) (controlplane.Credential, error) {
	sealed, err := s.keyring.Seal([]byte(secret), []byte(environmentID))
	if err != nil {
		return controlplane.Credential{}, err
	}
	return controlplane.Credential{KeyID: sealed.KeyID, Ciphertext: sealed.Ciphertext, RotateTime: now}, nil
}

// open decrypts an environment's secret ("" when it has none).
func (s *Service) open(env controlplane.Environment) (string, error) {
	if len(env.Credential.Ciphertext) == 0 {
		return "", nil
	}
	plain, err := s.keyring.Open(secrets.Sealed{KeyID: env.Credential.KeyID, Ciphertext: env.Credential.Ciphertext}, []byte(env.ID))
	if err != nil {
		return "", err
	}
	return string(plain), nil
}
