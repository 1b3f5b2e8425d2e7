// Package filter is the typed filter tree every engine evaluates. An AIP-160
// filter string is parsed and type-checked against an object's definition
// before it becomes a tree, so identifiers in it are known fields and values
// have the field's Go type; engines turn it into SQL with bind parameters or
// evaluate it in Go.
package filter

// Op is a comparison operator.
type Op string

// Comparison operators.
const (
	Eq Op = "="
	Ne Op = "!="
	Lt Op = "<"
	Le Op = "<="
	Gt Op = ">"
	Ge Op = ">="
)

// Expr is a node of the tree: And, Or, Not, Compare or Prefix. A nil Expr
// matches every record.
type Expr interface{ isExpr() }

// And matches records all of its terms match.
type And struct{ Terms []Expr }

// Or matches records any of its terms matches.
type Or struct{ Terms []Expr }

// Not matches records its term does not match.
type Not struct{ Term Expr }

// Compare compares a field with a value of the field's Go type (see
// schema.Field.Default). Value nil with Eq or Ne tests for NULL. Ordering
// comparisons never match NULL.
type Compare struct {
	Field string
	Op    Op
	Value any
}

// Prefix matches text fields that start with Prefix (AIP-160 `field = "ab*"`).
type Prefix struct {
	Field  string
	Prefix string
}

func (And) isExpr()     {}
func (Or) isExpr()      {}
func (Not) isExpr()     {}
func (Compare) isExpr() {}
func (Prefix) isExpr()  {}
