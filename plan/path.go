package plan

import (
	"slices"
	"strings"
)

// Path is a parsed FHIR element path: a resource type ("*" for any) and the
// steps beneath it. The supported FHIRPath subset is what policies need to
// name elements: member navigation, choice elements ("value[x]") and
// where(field='literal') filters on repeating elements.
type Path struct {
	Type  string
	Steps []Step
}

// Step is one member below the resource or the previous step.
type Step struct {
	Name   string
	Choice bool // Name[x]: matches nameString, nameQuantity, ...
	Where  []Cond
}

// Cond is one where() test: the string at Field, below the element, equals
// Value.
type Cond struct {
	Field []string // member path below the element: "system", "type.coding.code"
	Value string
}

// Matches reports whether a member key is the one the step names. It
// compares bytes, so a filter can test keys of a body it has not decoded.
func (s Step) Matches(key []byte) bool {
	if !s.Choice {
		return string(key) == s.Name
	}
	if len(key) <= len(s.Name) || string(key[:len(s.Name)]) != s.Name {
		return false
	}
	c := key[len(s.Name)]
	return c >= 'A' && c <= 'Z'
}

// ParsePath parses a path such as
// "Patient.identifier.where(system='http://hl7.org/fhir/sid/us-ssn').value".
// Errors name the path, which policies author; it never holds PHI.
func ParsePath(p string) (Path, error) {
	segs, err := splitPath(p)
	if err != nil {
		return Path{}, err
	}
	ep := Path{Type: segs[0]}
	if !IsIdent(ep.Type) && ep.Type != "*" {
		return Path{}, errorf(CodeBadDirective, "path %q: bad resource type", p)
	}
	for _, s := range segs[1:] {
		if strings.HasPrefix(s, "where(") {
			if len(ep.Steps) == 0 {
				return Path{}, errorf(CodeBadDirective, "path %q: where() needs an element before it", p)
			}
			c, err := parseWhere(p, s)
			if err != nil {
				return Path{}, err
			}
			last := &ep.Steps[len(ep.Steps)-1]
			last.Where = append(last.Where, c...)
			continue
		}
		st := Step{Name: s}
		if strings.HasSuffix(s, "[x]") {
			st.Name, st.Choice = strings.TrimSuffix(s, "[x]"), true
		}
		if !IsIdent(st.Name) {
			return Path{}, errorf(CodeBadDirective, "path %q: unsupported segment %q", p, s)
		}
		ep.Steps = append(ep.Steps, st)
	}
	return ep, nil
}

// splitPath splits on dots outside quotes and parentheses.
func splitPath(p string) ([]string, error) {
	var segs []string
	depth, quote, start := 0, false, 0
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case quote:
			if c == '\\' {
				i++
			} else if c == '\'' {
				quote = false
			}
		case c == '\'':
			quote = true
		case c == '(':
			depth++
		case c == ')':
			depth--
			if depth < 0 {
				return nil, errorf(CodeBadDirective, "path %q: unbalanced parenthesis", p)
			}
		case c == '.' && depth == 0:
			segs = append(segs, p[start:i])
			start = i + 1
		}
	}
	if quote || depth != 0 {
		return nil, errorf(CodeBadDirective, "path %q: unterminated literal or call", p)
	}
	segs = append(segs, p[start:])
	for _, s := range segs {
		if s == "" {
			return nil, errorf(CodeBadDirective, "path %q: empty segment", p)
		}
	}
	return segs, nil
}

// parseWhere accepts where(a='x'), where(a.b='x') and where(a='x' and b='y').
func parseWhere(p, s string) ([]Cond, error) {
	body := strings.TrimSuffix(strings.TrimPrefix(s, "where("), ")")
	if len(body) == len(s)-len("where(") {
		return nil, errorf(CodeBadDirective, "path %q: bad where()", p)
	}
	var out []Cond
	for part := range strings.SplitSeq(body, " and ") {
		field, lit, ok := strings.Cut(strings.TrimSpace(part), "=")
		field, lit = strings.TrimSpace(field), strings.TrimSpace(lit)
		names := strings.Split(field, ".")
		if !ok || slices.ContainsFunc(names, func(s string) bool { return !IsIdent(s) }) || len(lit) < 2 || lit[0] != '\'' || lit[len(lit)-1] != '\'' {
			return nil, errorf(CodeBadDirective, "path %q: where() supports field='literal' only", p)
		}
		lit = strings.ReplaceAll(lit[1:len(lit)-1], `\'`, `'`)
		out = append(out, Cond{Field: names, Value: lit})
	}
	return out, nil
}

// IsIdent reports whether s reads as a FHIR element or resource type name:
// letters, digits and underscores, not starting with a digit.
func IsIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')) {
			return false
		}
	}
	return true
}
