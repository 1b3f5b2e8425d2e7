package environment

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/internal/controlplane"
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

func environmentToProto(e controlplane.Environment) *environmentv1.Environment {
	return &environmentv1.Environment{
		Id:             e.ID,
		OrganizationId: e.OrganizationID,
		Slug:           e.Slug,
		DisplayName:    e.DisplayName,
		Type:           e.Type,
		Driver:         e.Driver,
		Status:         e.Status,
		StatusMessage:  e.StatusMessage,
		IsDefault:      e.IsDefault,
		Hostname:       e.Hostname,
		Region:         e.Region,
		StorageLimitMb: e.StorageLimitMB,
		DatabaseUrl:    e.DatabaseURL,
		CreateTime:     timestamp(e.CreateTime),
		UpdateTime:     timestamp(e.UpdateTime),
		ProvisionTime:  timestamp(e.ProvisionTime),
	}
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
