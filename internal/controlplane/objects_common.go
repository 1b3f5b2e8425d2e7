package controlplane

import (
	"errors"
	"time"
)

// prepareObjectPut checks and completes the arguments of PutObjectDefinition
// as both stores need them: the times a caller left zero are filled in
// (UpdateTime from now, CreateTime and ApplyTime from UpdateTime) and nil
// Steps become empty, for the NOT NULL column.
func prepareObjectPut(def ObjectDefinition, expected int64, migration ObjectMigration, now time.Time) (ObjectDefinition, ObjectMigration, error) {
	switch {
	case def.Name == "":
		return def, migration, errors.New("empty object name")
	case len(def.Definition) == 0:
		return def, migration, errors.New("empty object definition")
	case expected < 0:
		return def, migration, errors.New("negative expected version")
	}
	if def.UpdateTime.IsZero() {
		def.UpdateTime = now
	}
	if def.CreateTime.IsZero() {
		def.CreateTime = def.UpdateTime
	}
	if migration.ApplyTime.IsZero() {
		migration.ApplyTime = def.UpdateTime
	}
	if migration.Steps == nil {
		migration.Steps = []byte{}
	}
	def.Version = expected + 1
	migration.EnvironmentID, migration.Name, migration.Version = def.EnvironmentID, def.Name, def.Version
	return def, migration, nil
}

// nilIfEmpty reads an empty blob back as nil, whichever the driver returned.
func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}
