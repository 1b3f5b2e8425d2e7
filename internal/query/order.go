package query

import (
	"fmt"
	"strings"

	"go.einride.tech/aip/ordering"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/schema"
)

// ParseOrder parses an AIP-132 order_by ("created_at desc, name") against
// obj. Each field must exist, have an order (json fields have none) and
// appear once; an empty order_by is nil, which engines order by id. Errors
// are *Error with reason INVALID_ORDER_BY or UNKNOWN_FIELD.
func ParseOrder(obj *schema.Object, text string) ([]driver.OrderBy, error) {
	if strings.TrimSpace(text) == "" {
		return nil, nil
	}
	var ob ordering.OrderBy
	if err := ob.UnmarshalString(text); err != nil {
		// The library's message repeats the whole text; say what is wrong
		// instead.
		return nil, &Error{
			Reason:  ReasonInvalidOrderBy,
			Message: "order_by must be a comma-separated list of field names, each optionally followed by asc or desc",
		}
	}
	order := make([]driver.OrderBy, 0, len(ob.Fields))
	seen := make(map[string]bool, len(ob.Fields))
	for _, f := range ob.Fields {
		typ, ok := fieldType(obj, f.Path)
		if !ok {
			return nil, &Error{
				Reason:  ReasonUnknownField,
				Message: fmt.Sprintf("object %s has no field %s to order by", quote(obj.Name), quote(f.Path)),
			}
		}
		if typ == schema.TypeJSON {
			return nil, &Error{
				Reason:  ReasonInvalidOrderBy,
				Message: fmt.Sprintf("json field %s has no order", quote(f.Path)),
			}
		}
		if seen[f.Path] {
			return nil, &Error{
				Reason:  ReasonInvalidOrderBy,
				Message: fmt.Sprintf("field %s appears more than once in order_by", quote(f.Path)),
			}
		}
		seen[f.Path] = true
		order = append(order, driver.OrderBy{Field: f.Path, Desc: f.Desc})
	}
	return order, nil
}
