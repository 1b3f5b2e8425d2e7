package controlplane

import "context"

// EachEnvironment calls fn with every environment of every organization,
// organization by organization, a page at a time, until fn returns false
// or the store fails. It is for the rare passes over the whole control
// plane (at start, or a check no index serves); requests use the lists.
func EachEnvironment(ctx context.Context, s Store, fn func(org Organization, env Environment) bool) error {
	const size = 500
	for orgAfter := ""; ; {
		orgs, err := s.ListOrganizations(ctx, Page{After: orgAfter, Limit: size})
		if err != nil {
			return err
		}
		for _, org := range orgs {
			for after := ""; ; {
				envs, err := s.ListEnvironments(ctx, org.ID, Page{After: after, Limit: size})
				if err != nil {
					return err
				}
				for _, env := range envs {
					if !fn(org, env) {
						return nil
					}
				}
				if len(envs) < size {
					break
				}
				after = envs[len(envs)-1].ID
			}
		}
		if len(orgs) < size {
			return nil
		}
		orgAfter = orgs[len(orgs)-1].ID
	}
}
