// Command gen writes the code that turns an authz.Request into the policy
// input (policy/input_gen.go), the decision cache key (policy/cachekey_gen.go)
// and the audit record's input (audit/encode_gen.go). All three are read off
// the Request type by reflection, its JSON tags deciding names, order and
// omitempty, so a field added to the request reaches every consumer by
// running go generate ./authz/. The three are written as straight-line
// code, not walked from a table at run time, because each runs on the
// decision path of every Check and a table walk costs an indirect call or
// a reflect step per field. TestGeneratedFilesAreCurrent fails when a file
// on disk differs from what this program writes.
package main

import (
	"encoding"
	"encoding/json"
	"flag"
	"fmt"
	"go/format"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/phigate/phigate/authz"
)

func main() {
	root := flag.String("root", ".", "the module's root directory")
	flag.Parse()
	files, err := generate()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	for _, name := range slices.Sorted(mapKeys(files)) {
		if err := os.WriteFile(filepath.Join(*root, name), files[name], 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// Files written, relative to the module root.
const (
	inputFile    = "policy/input_gen.go"
	cacheKeyFile = "policy/cachekey_gen.go"
	encodeFile   = "audit/encode_gen.go"
)

// generate returns the generated files by path.
func generate() (map[string][]byte, error) {
	structs, err := collect(reflect.TypeFor[authz.Request]())
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for name, gen := range map[string]func([]*structInfo) string{
		inputFile: genInput, cacheKeyFile: genCacheKey, encodeFile: genEncode,
	} {
		src, err := format.Source([]byte(gen(structs)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out[name] = src
	}
	return out, nil
}

var (
	marshaler     = reflect.TypeFor[json.Marshaler]()
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
)

// kind is what a field is to the generated code.
type kind int

const (
	kString    kind = iota // string or a named string type
	kBool                  // bool
	kInt                   // int64
	kStrings               // []string
	kStruct                // a struct, held by value
	kPtr                   // a pointer to a struct
	kStructs               // a slice of structs
	kStringMap             // map[string]string
	kQuery                 // map[string][]string
)

type fieldInfo struct {
	goName string
	name   string // JSON (and input) name
	omit   bool   // omitempty
	kind   kind
	elem   string // struct type name for kStruct, kPtr, kStructs
	named  bool   // a named string type: converted with string()
}

type structInfo struct {
	name   string
	fields []fieldInfo // in declaration (document) order
}

// sorted returns the fields in the order of their names as Rego sorts
// object keys: bytewise.
func (s *structInfo) sorted() []fieldInfo {
	fs := slices.Clone(s.fields)
	slices.SortFunc(fs, func(a, b fieldInfo) int { return strings.Compare(a.name, b.name) })
	return fs
}

// collect reads every struct type reachable from root, root first. A field kind
// the generator does not know stops it: the consumers must be taught it
// here before the field can be added.
func collect(root reflect.Type) ([]*structInfo, error) {
	var out []*structInfo
	seen := map[reflect.Type]bool{}
	var visit func(t reflect.Type) error
	visit = func(t reflect.Type) error {
		if seen[t] {
			return nil
		}
		seen[t] = true
		if t.PkgPath() != root.PkgPath() {
			// The generated code names every type as authz.T.
			return fmt.Errorf("%s: struct from another package", t)
		}
		si := &structInfo{name: t.Name()}
		out = append(out, si)
		var next []reflect.Type
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			name, opts, _ := strings.Cut(tag, ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if name == "" || opts != "" && opts != "omitempty" {
				return fmt.Errorf("%s.%s: want a json tag with a name and at most omitempty", t.Name(), f.Name)
			}
			fi := fieldInfo{goName: f.Name, name: name, omit: opts == "omitempty"}
			ft := f.Type
			if ft.Implements(marshaler) || reflect.PointerTo(ft).Implements(marshaler) ||
				ft.Implements(textMarshaler) || reflect.PointerTo(ft).Implements(textMarshaler) {
				// encoding/json would call the method; the generated
				// writers would not.
				return fmt.Errorf("%s.%s: type %s marshals itself, which the generator does not follow", t.Name(), f.Name, ft)
			}
			switch {
			case ft.Kind() == reflect.String:
				fi.kind, fi.named = kString, ft.Name() != "string"
			case ft.Kind() == reflect.Bool:
				fi.kind = kBool
			case ft.Kind() == reflect.Int64:
				fi.kind = kInt
			case ft.Kind() == reflect.Slice && ft.Elem() == reflect.TypeFor[string]():
				fi.kind = kStrings
			case ft.Kind() == reflect.Struct:
				fi.kind, fi.elem = kStruct, ft.Name()
				next = append(next, ft)
			case ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct:
				fi.kind, fi.elem = kPtr, ft.Elem().Name()
				next = append(next, ft.Elem())
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				fi.kind, fi.elem = kStructs, ft.Elem().Name()
				next = append(next, ft.Elem())
			case ft == reflect.TypeFor[map[string]string]():
				fi.kind = kStringMap
			case ft == reflect.TypeFor[map[string][]string]():
				fi.kind = kQuery
			default:
				return fmt.Errorf("%s.%s: type %s is not one the generator writes; teach internal/gen", t.Name(), f.Name, ft)
			}
			switch {
			case fi.omit && fi.kind == kBool:
				return fmt.Errorf("%s.%s: an omitempty bool is not one the generator writes", t.Name(), f.Name)
			case fi.omit && (fi.kind == kStruct || fi.kind == kStringMap || fi.kind == kQuery):
				return fmt.Errorf("%s.%s: omitempty on this type is not one the generator writes", t.Name(), f.Name)
			case !fi.omit && fi.kind == kPtr:
				return fmt.Errorf("%s.%s: a pointer must be omitempty (the input has no null)", t.Name(), f.Name)
			}
			si.fields = append(si.fields, fi)
		}
		for _, n := range next {
			if err := visit(n); err != nil {
				return err
			}
		}
		return nil
	}
	if err := visit(root); err != nil {
		return nil, err
	}
	return out, nil
}

// value is the Go expression of field f of the struct at pointer v.
func (f fieldInfo) value(v string) string { return v + "." + f.goName }

// str is the field as a plain string.
func (f fieldInfo) str(v string) string {
	if f.named {
		return "string(" + f.value(v) + ")"
	}
	return f.value(v)
}

// present is the condition under which omitempty keeps f.
func (f fieldInfo) present(v string) string {
	switch f.kind {
	case kString:
		return f.value(v) + ` != ""`
	case kInt:
		return f.value(v) + " != 0"
	case kStrings, kStructs:
		return "len(" + f.value(v) + ") > 0"
	case kPtr:
		return f.value(v) + " != nil"
	}
	panic("no empty form for " + f.goName)
}

// empty is the condition under which omitempty leaves f out.
func (f fieldInfo) empty(v string) string {
	switch f.kind {
	case kString:
		return f.value(v) + ` == ""`
	case kInt:
		return f.value(v) + " == 0"
	case kStrings, kStructs:
		return "len(" + f.value(v) + ") == 0"
	case kPtr:
		return f.value(v) + " == nil"
	}
	panic("no empty form for " + f.goName)
}

const header = "// Code generated by internal/gen from authz.Request; DO NOT EDIT.\n\n"

// ---- policy input (OPA AST) ----

func genInput(structs []*structInfo) string {
	var b strings.Builder
	b.WriteString(header)
	b.WriteString("package policy\n\nimport (\n\t\"github.com/open-policy-agent/opa/v1/ast\"\n\n\t\"github.com/phigate/phigate/authz\"\n)\n\n")
	req := structs[0]
	b.WriteString("// inputFields are the top-level fields of the input, in document order.\nvar inputFields = []string{")
	for i, f := range req.fields {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(f.name))
	}
	b.WriteString("}\n\n")
	b.WriteString("// inputField builds one top-level field of the input; nil when the input\n// has no such field (an omitted optional one or an unknown name).\n")
	b.WriteString("func inputField(r *authz.Request, name string) ast.Value {\n\tswitch name {\n")
	for _, f := range req.fields {
		fmt.Fprintf(&b, "\tcase %q:\n", f.name)
		if f.omit {
			fmt.Fprintf(&b, "\t\tif %s {\n\t\t\treturn nil\n\t\t}\n", f.empty("r"))
		}
		fmt.Fprintf(&b, "\t\treturn %s\n", astExpr(f, "r"))
	}
	b.WriteString("\t}\n\treturn nil\n}\n")
	arrays := map[string]bool{}
	for _, s := range structs {
		fmt.Fprintf(&b, "\nfunc value%s(v *authz.%s) ast.Value {\n", s.name, s.name)
		fmt.Fprintf(&b, "\titems := make([][2]*ast.Term, 0, %d)\n", len(s.fields))
		for _, f := range s.fields {
			add := fmt.Sprintf("items = append(items, item(%q, %s))", f.name, astExpr(f, "v"))
			if f.omit {
				fmt.Fprintf(&b, "\tif %s {\n\t\t%s\n\t}\n", f.present("v"), add)
			} else {
				fmt.Fprintf(&b, "\t%s\n", add)
			}
			if f.kind == kStructs {
				arrays[f.elem] = true
			}
		}
		b.WriteString("\treturn ast.NewObject(items...)\n}\n")
	}
	for _, s := range structs {
		if !arrays[s.name] {
			continue
		}
		fmt.Fprintf(&b, "\nfunc array%s(xs []authz.%s) ast.Value {\n", s.name, s.name)
		fmt.Fprintf(&b, "\tterms := make([]*ast.Term, len(xs))\n\tfor i := range xs {\n\t\tterms[i] = ast.NewTerm(value%s(&xs[i]))\n\t}\n", s.name)
		b.WriteString("\treturn ast.NewArray(terms...)\n}\n")
	}
	return b.String()
}

// astExpr builds field f of the struct at v as an ast.Value. A nil list is
// the empty array, a nil map the empty object: the parser never leaves one
// nil, and the policy should not have to tell null from empty.
func astExpr(f fieldInfo, v string) string {
	switch f.kind {
	case kString:
		return "ast.String(" + f.str(v) + ")"
	case kBool:
		return "ast.Boolean(" + f.value(v) + ")"
	case kInt:
		return "ast.Number(itoa(" + f.value(v) + "))"
	case kStrings:
		return "strArray(" + f.value(v) + ")"
	case kStruct:
		return "value" + f.elem + "(&" + f.value(v) + ")"
	case kPtr:
		return "value" + f.elem + "(" + f.value(v) + ")"
	case kStructs:
		return "array" + f.elem + "(" + f.value(v) + ")"
	case kStringMap:
		return "stringMap(" + f.value(v) + ")"
	case kQuery:
		return "queryValue(" + f.value(v) + ")"
	}
	panic("unknown kind")
}

// ---- decision cache key (canonical text, see appendCanonical) ----

func genCacheKey(structs []*structInfo) string {
	var b strings.Builder
	b.WriteString(header)
	b.WriteString("package policy\n\nimport \"github.com/phigate/phigate/authz\"\n\n")
	b.WriteString(`// appendRequestPath writes the canonical text of the input value at path p
// of r, byte for byte what appendProjected writes from the AST inputField
// builds: undefined ('u') for a field the input leaves out or does not have.
func appendRequestPath(b []byte, r *authz.Request, p []string) []byte {
	return keyPathRequest(b, r, p)
}
`)
	arrays := map[string]bool{}
	for _, s := range structs {
		// The value at a path below this struct.
		fmt.Fprintf(&b, "\nfunc keyPath%s(b []byte, v *authz.%s, p []string) []byte {\n", s.name, s.name)
		b.WriteString("\tif len(p) == 0 {\n\t\treturn key" + s.name + "(b, v)\n\t}\n\tswitch p[0] {\n")
		for _, f := range s.fields {
			fmt.Fprintf(&b, "\tcase %q:\n", f.name)
			// An omitted field is undefined, and so is anything below a
			// string, number, bool or array.
			var undef []string
			if f.omit {
				undef = append(undef, f.empty("v"))
			}
			if f.kind != kStruct && f.kind != kPtr && f.kind != kStringMap && f.kind != kQuery {
				undef = append(undef, "len(p) > 1")
			}
			if len(undef) > 0 {
				fmt.Fprintf(&b, "\t\tif %s {\n\t\t\treturn append(b, 'u')\n\t\t}\n", strings.Join(undef, " || "))
			}
			switch f.kind {
			case kStruct:
				fmt.Fprintf(&b, "\t\treturn keyPath%s(b, &%s, p[1:])\n", f.elem, f.value("v"))
			case kPtr:
				fmt.Fprintf(&b, "\t\treturn keyPath%s(b, %s, p[1:])\n", f.elem, f.value("v"))
			case kStringMap, kQuery:
				fn := map[kind]string{kStringMap: "keyPathStringMap", kQuery: "keyPathQuery"}[f.kind]
				fmt.Fprintf(&b, "\t\treturn %s(b, %s, p[1:])\n", fn, f.value("v"))
			default:
				fmt.Fprintf(&b, "\t\treturn %s\n", keyExpr(f, "v"))
			}
		}
		b.WriteString("\t}\n\treturn append(b, 'u')\n}\n")

		// The whole struct: an object, keys sorted.
		fixed := 0
		for _, f := range s.fields {
			if !f.omit {
				fixed++
			}
		}
		fmt.Fprintf(&b, "\nfunc key%s(b []byte, v *authz.%s) []byte {\n", s.name, s.name)
		if fixed == len(s.fields) {
			fmt.Fprintf(&b, "\tb = append(b, %q...)\n", "o"+strconv.Itoa(fixed)+":")
		} else {
			fmt.Fprintf(&b, "\tn := %d\n", fixed)
			for _, f := range s.fields {
				if f.omit {
					fmt.Fprintf(&b, "\tif %s {\n\t\tn++\n\t}\n", f.present("v"))
				}
			}
			b.WriteString("\tb = appendCanonLen(append(b, 'o'), n)\n")
		}
		for _, f := range s.sorted() {
			k := fmt.Sprintf("%q", "s"+strconv.Itoa(len(f.name))+":"+f.name)
			stmt := fmt.Sprintf("b = %s", strings.Replace(keyExpr(f, "v"), "(b,", "(append(b, "+k+"...),", 1))
			if f.kind == kStructs {
				// Inline, so that a type holding itself (batch entries)
				// recurses into its own writer only: escape analysis gives
				// up on a cycle of functions and would move the caller's
				// stack buffer to the heap.
				ak := fmt.Sprintf("%q", "s"+strconv.Itoa(len(f.name))+":"+f.name+"a")
				stmt = fmt.Sprintf("b = appendCanonLen(append(b, %s...), len(%s))\n\tfor i := range %s {\n\t\tb = key%s(b, &%s[i])\n\t}",
					ak, f.value("v"), f.value("v"), f.elem, f.value("v"))
			}
			if f.omit {
				fmt.Fprintf(&b, "\tif %s {\n\t\t%s\n\t}\n", f.present("v"), stmt)
			} else {
				fmt.Fprintf(&b, "\t%s\n", stmt)
			}
			if f.kind == kStructs {
				arrays[f.elem] = true
			}
		}
		b.WriteString("\treturn b\n}\n")
	}
	for _, s := range structs {
		if !arrays[s.name] {
			continue
		}
		fmt.Fprintf(&b, "\nfunc keyArray%s(b []byte, xs []authz.%s) []byte {\n", s.name, s.name)
		fmt.Fprintf(&b, "\tb = appendCanonLen(append(b, 'a'), len(xs))\n\tfor i := range xs {\n\t\tb = key%s(b, &xs[i])\n\t}\n\treturn b\n}\n", s.name)
	}
	return b.String()
}

// keyExpr writes field f of the struct at v (present) to b.
func keyExpr(f fieldInfo, v string) string {
	switch f.kind {
	case kString:
		return "appendCanonString(b, " + f.str(v) + ")"
	case kBool:
		return "appendCanonBool(b, " + f.value(v) + ")"
	case kInt:
		return "appendCanonInt(b, " + f.value(v) + ")"
	case kStrings:
		return "appendStrings(b, " + f.value(v) + ")"
	case kStruct:
		return "key" + f.elem + "(b, &" + f.value(v) + ")"
	case kPtr:
		return "key" + f.elem + "(b, " + f.value(v) + ")"
	case kStructs:
		return "keyArray" + f.elem + "(b, " + f.value(v) + ")"
	case kStringMap:
		return "keyStringMap(b, " + f.value(v) + ")"
	case kQuery:
		return "keyQuery(b, " + f.value(v) + ")"
	}
	panic("unknown kind")
}

// ---- audit record (encoding/json's bytes) ----

// encodeOverrides name, by Go path, fields the record writes with a
// function of its own instead of their plain JSON: the headers, whose
// credentials the record never stores whatever the request holds.
var encodeOverrides = map[string]string{"Request.Headers": "appendStoredHeaders"}

func genEncode(structs []*structInfo) string {
	var b strings.Builder
	b.WriteString(header)
	b.WriteString("package audit\n\nimport (\n\t\"strconv\"\n\n\t\"github.com/phigate/phigate/authz\"\n)\n")
	arrays := map[string]bool{}
	for _, s := range structs {
		w := &jsonWriter{b: &b}
		fmt.Fprintf(&b, "\nfunc appendJSON%s(dst []byte, v *authz.%s) []byte {\n", s.name, s.name)
		w.lit("{")
		for _, f := range s.fields {
			keyLit := strconv.Quote(f.name) + ":"
			val := jsonExpr(f, "v", encodeOverrides[s.name+"."+f.goName])
			if f.kind == kStructs {
				arrays[f.elem] = true
			}
			if f.omit {
				w.flush()
				// The comma is known unless no member is sure to precede.
				sep := "append(dst, `," + keyLit + "`...)"
				if !w.member {
					sep = "key(dst, `" + keyLit + "`)"
				}
				fmt.Fprintf(&b, "\tif %s {\n\t\tdst = %s\n\t}\n", f.present("v"), strings.Replace(val, "(dst,", "("+sep+",", 1))
				w.maybe = true
				continue
			}
			if w.member {
				w.lit(",")
			} else if w.maybe {
				w.flush()
				fmt.Fprintf(&b, "\tdst = comma(dst)\n")
			}
			w.lit(keyLit)
			w.flush()
			fmt.Fprintf(&b, "\tdst = %s\n", val)
			w.member = true
		}
		w.lit("}")
		w.flush()
		b.WriteString("\treturn dst\n}\n")
	}
	for _, s := range structs {
		if !arrays[s.name] {
			continue
		}
		fmt.Fprintf(&b, "\nfunc appendJSON%sArray(dst []byte, xs []authz.%s) []byte {\n", s.name, s.name)
		b.WriteString("\tif xs == nil {\n\t\treturn append(dst, \"null\"...)\n\t}\n\tdst = append(dst, '[')\n\tfor i := range xs {\n")
		fmt.Fprintf(&b, "\t\tif i > 0 {\n\t\t\tdst = append(dst, ',')\n\t\t}\n\t\tdst = appendJSON%s(dst, &xs[i])\n\t}\n\treturn append(dst, ']')\n}\n", s.name)
	}
	return b.String()
}

// jsonWriter merges the constant bytes between values into one append.
type jsonWriter struct {
	b       *strings.Builder
	pending string
	member  bool // a member is surely written: the next one needs a comma
	maybe   bool // a member may have been written (an omitempty one)
}

func (w *jsonWriter) lit(s string) { w.pending += s }

func (w *jsonWriter) flush() {
	if w.pending == "" {
		return
	}
	if len(w.pending) == 1 {
		fmt.Fprintf(w.b, "\tdst = append(dst, %s)\n", strconv.QuoteRune(rune(w.pending[0])))
	} else {
		fmt.Fprintf(w.b, "\tdst = append(dst, `%s`...)\n", w.pending)
	}
	w.pending = ""
}

// jsonExpr appends field f of the struct at v to dst as encoding/json does.
func jsonExpr(f fieldInfo, v, override string) string {
	if override != "" {
		return override + "(dst, " + f.value(v) + ")"
	}
	switch f.kind {
	case kString:
		return "appendString(dst, " + f.str(v) + ")"
	case kBool:
		return "appendBool(dst, " + f.value(v) + ")"
	case kInt:
		return "strconv.AppendInt(dst, " + f.value(v) + ", 10)"
	case kStrings:
		return "appendStrings(dst, " + f.value(v) + ")"
	case kStruct:
		return "appendJSON" + f.elem + "(dst, &" + f.value(v) + ")"
	case kPtr:
		return "appendJSON" + f.elem + "(dst, " + f.value(v) + ")"
	case kStructs:
		return "appendJSON" + f.elem + "Array(dst, " + f.value(v) + ")"
	case kStringMap:
		return "appendStringMap(dst, " + f.value(v) + ")"
	case kQuery:
		return "appendMap(dst, " + f.value(v) + ", appendStrings)"
	}
	panic("unknown kind")
}
