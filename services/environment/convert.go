package environment

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/ownership"
	"github.com/envplane/envplane/internal/provision"
)

func organizationToProto(o controlplane.Organization) *environmentv1.Organization {
	return &environmentv1.Organization{
		Id:          o.ID,
		Slug:        o.Slug,
		DisplayName: o.DisplayName,
		CreateTime:  timestamp(o.CreateTime),
		UpdateTime:  timestamp(o.UpdateTime),
	}
}

func (s *Service) environmentToProto(e controlplane.Environment) *environmentv1.Environment {
	return &environmentv1.Environment{
		Id:                   e.ID,
		OrganizationId:       e.OrganizationID,
		Slug:                 e.Slug,
		DisplayName:          e.DisplayName,
		Type:                 e.Type,
		Driver:               e.Driver,
		Status:               e.Status,
		StatusMessage:        e.StatusMessage,
		IsDefault:            e.IsDefault,
		Hostname:             e.Hostname,
		Region:               e.Region,
		StorageLimitMb:       e.StorageLimitMB,
		DatabaseUrl:          e.DatabaseURL,
		CreateTime:           timestamp(e.CreateTime),
		UpdateTime:           timestamp(e.UpdateTime),
		ProvisionTime:        timestamp(e.ProvisionTime),
		HostnameVerification: hostnameVerificationToProto(e, s.checks.Grace),
		ResetTime:            timestamp(s.resetTime(e)),
	}
}

// resetTime is when a memory environment last lost its records: the start
// of this process, for one provisioned before it (memory environments run
// on one server only, the one of the embedded control plane). Zero
// otherwise.
func (s *Service) resetTime(e controlplane.Environment) time.Time {
	if e.Driver != provision.DriverMemory || e.ProvisionTime.IsZero() || !e.ProvisionTime.Before(s.started) {
		return time.Time{}
	}
	return s.started
}

func hostnameVerificationToProto(e controlplane.Environment, grace time.Duration) *environmentv1.HostnameVerification {
	p := e.Proof
	v := &environmentv1.HostnameVerification{
		State:         p.State,
		Method:        p.Method,
		Token:         p.Token,
		VerifyTime:    timestamp(p.VerifyTime),
		CheckTime:     timestamp(p.CheckTime),
		NextCheckTime: timestamp(p.NextCheckTime),
		Message:       p.Message,
	}
	if p.Token != "" {
		v.DnsName = ownership.DNSName(e.Hostname)
		v.HttpUrl = "http://" + e.Hostname + ownership.HTTPPath(p.Token)
	}
	if p.Routes() && !p.FailingSince.IsZero() {
		v.GraceExpireTime = timestamp(p.FailingSince.Add(grace))
	}
	return v
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
