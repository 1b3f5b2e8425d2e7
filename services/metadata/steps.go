package metadata

import (
	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/internal/schema"
)

func stepsToProto(steps []schema.Step) []*metadatav1.MigrationStep {
	out := make([]*metadatav1.MigrationStep, 0, len(steps))
	for _, s := range steps {
		out = append(out, &metadatav1.MigrationStep{
			Kind: string(s.Kind), Target: s.Target, Description: s.Description, Destructive: s.Destructive,
		})
	}
	return out
}
