package regolib

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// minRegoTests is the floor on named Rego unit tests: the library is only
// as trustworthy as the cases that pin it down.
const minRegoTests = 150

// load reads the embedded library the way the policy loader does: every
// .rego file and data.json as base data.
func load(t testing.TB) (*loader.Result, storage.Store) {
	t.Helper()
	res, err := loader.NewFileLoader().WithFS(FS).WithRegoVersion(ast.RegoV1).All([]string{"."})
	if err != nil {
		t.Fatalf("load embedded library: %v", err)
	}
	// Values are kept as AST in the store so evaluation does not convert
	// the policy data on every read (as phigate's loader does).
	store, err := res.StoreWithOpts(inmem.OptReturnASTValuesOnRead(true))
	if err != nil {
		t.Fatalf("store: %v", err)
	}
	return res, store
}

// policyModules are the modules phigate serves: tests are left out, as the
// loader in policy/ leaves them out.
func policyModules(res *loader.Result) map[string]*ast.Module {
	out := map[string]*ast.Module{}
	for name, m := range res.ParsedModules() {
		if !strings.HasSuffix(name, "_test.rego") {
			out[name] = m
		}
	}
	return out
}

func TestRegoUnitTests(t *testing.T) {
	res, store := load(t)
	ctx := t.Context()
	txn := storage.NewTransactionOrDie(ctx, store)
	defer store.Abort(ctx, txn)
	runner := tester.NewRunner().
		SetCompiler(ast.NewCompiler().WithEnablePrintStatements(true)).
		SetStore(store).
		SetModules(res.ParsedModules()).
		SetDefaultRegoVersion(ast.RegoV1).
		RaiseBuiltinErrors(false).
		CapturePrintOutput(true)
	ch, err := runner.RunTests(ctx, txn)
	if err != nil {
		t.Fatalf("run rego tests: %v", err)
	}
	var failed []string
	total := 0
	perPkg := map[string]int{}
	for r := range ch {
		total++
		perPkg[r.Package]++
		if !r.Pass() {
			msg := r.Package + "." + r.Name
			if r.Error != nil {
				msg += ": " + r.Error.Error()
			}
			if len(r.Output) > 0 {
				msg += "\n" + string(r.Output)
			}
			failed = append(failed, msg)
		}
	}
	sort.Strings(failed)
	if len(failed) > 0 {
		t.Errorf("%d of %d rego tests failed:\n%s", len(failed), total, strings.Join(failed, "\n"))
	}
	if total < minRegoTests {
		t.Errorf("got %d rego tests, want at least %d", total, minRegoTests)
	}
	pkgs := make([]string, 0, len(perPkg))
	for p, n := range perPkg {
		pkgs = append(pkgs, fmt.Sprintf("%s=%d", p, n))
	}
	sort.Strings(pkgs)
	t.Logf("%d rego tests: %s", total, strings.Join(pkgs, " "))
}

// prepare compiles the decision query once, as phigate does at load time.
func prepare(t testing.TB) rego.PreparedEvalQuery {
	t.Helper()
	res, store := load(t)
	opts := []func(*rego.Rego){
		rego.Query("data.phigate.authz.decision"),
		rego.Store(store),
		rego.StoreReadAST(true),
		rego.SetRegoVersion(ast.RegoV1),
	}
	for name, m := range policyModules(res) {
		opts = append(opts, rego.ParsedModule(m))
		_ = name
	}
	pq, err := rego.New(opts...).PrepareForEval(context.Background())
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	return pq
}

func decide(t testing.TB, ctx context.Context, pq rego.PreparedEvalQuery, input any) map[string]any {
	t.Helper()
	rs, err := pq.Eval(ctx, rego.EvalInput(input))
	if err != nil {
		t.Fatalf("eval: %v", err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		t.Fatalf("decision undefined for input %v", input)
	}
	d, ok := rs[0].Expressions[0].Value.(map[string]any)
	if !ok {
		t.Fatalf("decision is %T, want object", rs[0].Expressions[0].Value)
	}
	return d
}

// decisionCase is one file entry under testdata/cases: a realistic input and
// the parts of the decision it must produce.
type decisionCase struct {
	Name  string         `json:"name"`
	Input map[string]any `json:"input"`
	Want  struct {
		Allow    bool     `json:"allow"`
		Status   int      `json:"status"`
		Reason   string   `json:"reason"`
		Patients []string `json:"enforce_patients"`
		Rules    []string `json:"audit_rules_include"`
		Redact   []string `json:"redact_actions"`
		Labels   []string `json:"permitted_labels"`
		BG       bool     `json:"break_glass"`
	} `json:"want"`
}

func loadCases(t testing.TB) []decisionCase {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "cases", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no decision cases: %v", err)
	}
	var all []decisionCase
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var cs []decisionCase
		if err := json.Unmarshal(raw, &cs); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for i := range cs {
			cs[i].Name = strings.TrimSuffix(filepath.Base(f), ".json") + "/" + cs[i].Name
		}
		all = append(all, cs...)
	}
	return all
}

func TestDecisionCases(t *testing.T) {
	pq := prepare(t)
	for _, tc := range loadCases(t) {
		t.Run(tc.Name, func(t *testing.T) {
			raw := decide(t, t.Context(), pq, tc.Input)
			d := typed(t, raw)
			if d.Allow != tc.Want.Allow || d.Status != tc.Want.Status || d.Reason != tc.Want.Reason {
				t.Fatalf("got allow=%v status=%d reason=%q, want allow=%v status=%d reason=%q (rules %v)",
					d.Allow, d.Status, d.Reason, tc.Want.Allow, tc.Want.Status, tc.Want.Reason, d.Audit.Rules)
			}
			if tc.Want.Patients != nil && !slices.Equal(enforcePatients(d), tc.Want.Patients) {
				t.Errorf("enforce.patients: got %v, want %v", enforcePatients(d), tc.Want.Patients)
			}
			for _, r := range tc.Want.Rules {
				if !slices.Contains(d.Audit.Rules, r) {
					t.Errorf("audit.rules %v lacks %q", d.Audit.Rules, r)
				}
			}
			if tc.Want.Redact != nil {
				var got []string
				for _, x := range d.Redact {
					got = append(got, string(x.Action))
				}
				if !slices.Equal(got, tc.Want.Redact) {
					t.Errorf("redact actions: got %v, want %v", got, tc.Want.Redact)
				}
			}
			if tc.Want.Labels != nil && !slices.Equal(d.Enforce.PermittedLabels, tc.Want.Labels) {
				t.Errorf("permitted_labels: got %v, want %v", d.Enforce.PermittedLabels, tc.Want.Labels)
			}
			if d.BreakGlass.Active != tc.Want.BG {
				t.Errorf("break_glass.active: got %v, want %v", d.BreakGlass.Active, tc.Want.BG)
			}
		})
	}
}

func enforcePatients(d decision) []string {
	if d.Enforce == nil || len(d.Enforce.Patients) == 0 {
		return []string{}
	}
	return d.Enforce.Patients
}

// typed decodes the decision the way phigate does, with unknown fields
// refused so a misspelt key in the policy is caught here.
func typed(t testing.TB, raw map[string]any) decision {
	t.Helper()
	b, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	var d decision
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("decision does not decode into decision: %v\n%s", err, b)
	}
	return d
}

// decision mirrors the decision document phigate decodes into
// authz.Decision and plan.Directive/Enforcement, field for field (JSON
// names and types). It is kept here so the library's tests need not import
// the policy package; TestDecisionShape (shape_test.go) holds its fields to
// those the real decoder reads and the library writes, and decodes every
// decision of the equivalence harness through the real decoder.
type decision struct {
	Allow           bool              `json:"allow"`
	Status          int               `json:"status"`
	Reason          string            `json:"reason"`
	Headers         map[string]string `json:"headers"`
	RemoveHeaders   []string          `json:"remove_headers"`
	ResponseHeaders map[string]string `json:"response_headers"`
	Redact          []struct {
		Path    string   `json:"path"`
		Action  string   `json:"action"`
		KeyID   string   `json:"key_id"`
		Format  string   `json:"format"`
		Keep    []string `json:"keep"`
		Profile string   `json:"profile"`
	} `json:"redact"`
	Enforce *struct {
		Patients        []string `json:"patients"`
		AnyPatient      bool     `json:"any_patient"`
		PermittedLabels []string `json:"permitted_labels"`
		ResourceTypes   []string `json:"resource_types"`
	} `json:"enforce"`
	BreakGlass struct {
		Active  bool   `json:"active"`
		Reason  string `json:"reason"`
		Expires string `json:"expires"`
	} `json:"break_glass"`
	Obligations []struct {
		Type   string            `json:"type"`
		Params map[string]string `json:"params"`
	} `json:"obligations"`
	Audit struct {
		Patients []string `json:"patients"`
		Purpose  string   `json:"purpose"`
		Rules    []string `json:"rules"`
	} `json:"audit"`
	Cache struct {
		UntilNS int64 `json:"until_ns"`
	} `json:"cache"`
}
