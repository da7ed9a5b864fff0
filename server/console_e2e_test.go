package server_test

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
)

var updateScreens = flag.Bool("update-screens", false, "copy the console's screenshots into docs/console for the README")

// browser starts headless Chromium (Debian's chromium, which make test
// installs) for t, or skips t without it outside CI.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed (make test installs Debian's chromium)")
		}
		t.Skip("chromium is not installed")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1280, 900), chromedp.Flag("lang", "en-US"))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	ctx, cancel3 := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancel3)
	return ctx
}

// TestConsoleInChromium: an officer signs in to the console in a real
// headless Chromium, looks up who accessed a patient, clears the alert a
// bulk read raised, marks a break-glass access justified, approves an
// export and reads the entitlement review; the cleared clinician reads
// again and the approved export starts through Envoy, and every step the
// officer took is in the audit trail. A
// screenshot of each screen is kept under test-artifacts/console.
func TestConsoleInChromium(t *testing.T) {
	policyDir := t.TempDir()
	stacktest.CopyLibrary(t, policyDir)
	// A small limit, so that a short bulk read raises an alert.
	setRoleThresholds(t, filepath.Join(policyDir, "data.json"), "physician", map[string]any{"distinct_patients": 3})
	s := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) {
		c.Console.Enabled = true
		c.Policy.Source.Dir = policyDir
		withApprovals(c)
		c.Approvals.TTL = time.Hour
	}})
	s.Up.BulkExport()
	mfa := []string{"pwd", "otp"}
	// An emergency read, for the break-glass review.
	medic := s.Token(demokeys.TokenSpec{Subject: "prac-002", Roles: []string{"physician"}, FHIRUser: "Practitioner/prac-002", AMR: mfa})
	if r := s.Do("GET", "/fhir/Patient/pat-0005", medic, map[string]string{"x-break-glass": "trauma bay"}, nil); r.Status != 200 {
		t.Fatalf("break-glass: %d", r.Status)
	}
	// An export waiting for a second person.
	requester := s.Token(demokeys.TokenSpec{Subject: "admin-1", Roles: []string{"admin"}, AMR: mfa})
	const kickoff = "/fhir/$export?_type=Patient"
	ref := approvalRef(t, s.Do("GET", kickoff, requester, nil, nil))
	doc := s.Token(stacktest.Physician(1))
	// prac-001's care team: pat-0001, pat-0061, pat-0121, pat-0181, ...
	for _, p := range []string{"pat-0001", "pat-0001", "pat-0061", "pat-0121"} {
		if r := s.Do("GET", "/fhir/Patient/"+p, doc, nil, nil); r.Status != 200 {
			t.Fatalf("read %s: %d", p, r.Status)
		}
	}
	if r := s.Do("GET", "/fhir/Patient/pat-0002", s.Token(stacktest.Physician(1)), nil, nil); r.Status != 403 {
		t.Fatalf("a patient outside the care team: %d", r.Status)
	}
	if r := s.Do("GET", "/fhir/Patient/pat-0181", doc, nil, nil); r.Status != 403 {
		t.Fatalf("the fourth distinct patient: %d, want 403 (over the limit)", r.Status)
	}
	if r := s.Do("GET", "/fhir/Patient/pat-0001", doc, nil, nil); r.Status != 403 {
		t.Fatalf("held by the open alert: %d", r.Status)
	}
	officer := s.Token(demokeys.TokenSpec{Subject: "officer-1", Roles: []string{"privacy-officer"}, AMR: []string{"pwd", "otp"}})
	oneFactor := s.Token(demokeys.TokenSpec{Subject: "officer-2", Roles: []string{"privacy-officer"}})

	ctx := browser(t)
	base := "http://" + s.Phigate.AdminAddr()
	art := filepath.Join("..", "test-artifacts", "console")
	if err := os.MkdirAll(art, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			png, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(art, name+".png"), png, 0o644)
		})
	}
	text := func(sel string, dst *string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			v, err := chromedp.Text(sel)(ctx, tg)
			*dst = v
			return err
		})
	}
	var loginError, allowed, denied, openAlerts, count, table, done, none, bgDone, bgNone, apDone, apNone, roles string
	err := chromedp.Do(ctx,
		// Not signed in: the console sends the browser to its login.
		chromedp.Navigate(base+"/console/patient?id=pat-0001"),
		chromedp.WaitVisible("#token"),
		// One factor is not enough.
		chromedp.SetValue("#token", oneFactor),
		chromedp.Click("#signin"),
		chromedp.WaitVisible("#error"),
		text("#error", &loginError),
		chromedp.SetValue("#token", officer),
		chromedp.Click("#signin"),
		chromedp.WaitVisible("#chart"),
		text("#allowed", &allowed),
		text("#denied", &denied),
		text("#open-alerts", &openAlerts),
		shot("overview"),
		chromedp.Navigate(base+"/console/patient"),
		chromedp.WaitVisible("#patient-id"),
		chromedp.SetValue("#patient-id", "Patient/pat-0001"),
		chromedp.Click("#look"),
		chromedp.WaitVisible("#accesses"),
		text("#count", &count),
		text("#accesses", &table),
		shot("patient"),
		chromedp.Navigate(base+"/console/alerts"),
		chromedp.WaitVisible("#open"),
		shot("alerts"),
		chromedp.SetValue(`#open input[name="note"]`, "ward round, justified"),
		chromedp.Click(`#open button[value="cleared"]`),
		chromedp.WaitVisible("#done"),
		text("#done", &done),
		text("#none", &none),
		chromedp.Navigate(base+"/console/breakglass"),
		chromedp.WaitVisible("#queue"),
		shot("breakglass"),
		chromedp.SetValue(`#queue input[name="note"]`, "trauma bay, unconscious patient"),
		chromedp.Click(`#queue button[value="justified"]`),
		chromedp.WaitVisible("#done"),
		text("#done", &bgDone),
		text("#none", &bgNone),
		chromedp.Navigate(base+"/console/approvals"),
		chromedp.WaitVisible("#pending"),
		shot("approvals"),
		chromedp.Click(`#approval-`+ref+` button[value="approve"]`),
		chromedp.WaitVisible("#done"),
		text("#done", &apDone),
		text("#none", &apNone),
		chromedp.Navigate(base+"/console/review"),
		chromedp.WaitVisible("#sample"),
		text("#roles", &roles),
		shot("review"),
	)
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	if !strings.Contains(loginError, "second factor") {
		t.Errorf("single-factor sign-in: %q", loginError)
	}
	if allowed != "5" || denied != "4" || openAlerts != "1" {
		t.Errorf("overview: %s allowed, %s denied, %s open alerts; want 5 (a break-glass read and 4 of prac-001), 4 (the kick-off, 3 of prac-001), 1", allowed, denied, openAlerts)
	}
	// pat-0001: read twice, then refused while held.
	if !strings.HasPrefix(count, "3 records for Patient/pat-0001") || strings.Count(table, "(Practitioner/prac-001)") != 3 || !strings.Contains(table, "abuse.alert_open") {
		t.Errorf("who looked at pat-0001: %q\n%q", count, table)
	}
	if done != "Alert cleared." || none != "No open alerts." {
		t.Errorf("after clearing: %q %q", done, none)
	}
	if bgDone != "Marked justified." || bgNone != "No break-glass access waits for a review." {
		t.Errorf("break-glass review: %q %q", bgDone, bgNone)
	}
	if apDone != "Approved." || apNone != "Nothing waits for an approval." {
		t.Errorf("approvals: %q %q", apDone, apNone)
	}
	if !strings.Contains(roles, "researcher") {
		t.Errorf("entitlement review: roles never exercised %q, want the researcher's among them", roles)
	}
	waitStatus(t, s, doc, "/fhir/Patient/pat-0001", 200, 2*time.Second)
	// The approved export now starts.
	if r := s.Do("GET", kickoff, requester, nil, nil); r.Status != 202 {
		t.Fatalf("the approved kick-off: %d %s, want 202", r.Status, r.Body)
	}

	// Every step is on record, under the officer's name.
	entries, err := audit.Query(s.Phigate.AuditDir(), audit.Filter{Kind: audit.KindConsole}, audit.QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, e := range entries {
		sub, _ := e.Event.User()
		steps = append(steps, sub+":"+e.Event.OutcomeDesc)
	}
	want := []string{"officer-2:login: refused: second factor required", "officer-1:login", "officer-1:overview",
		"officer-1:patient_accesses", "officer-1:alerts", "officer-1:alert_cleared", "officer-1:alerts",
		"officer-1:break_glass_queue", "officer-1:break_glass_justified", "officer-1:break_glass_queue",
		"officer-1:approvals", "officer-1:approval_approved", "officer-1:approvals", "officer-1:entitlement_review"}
	if strings.Join(steps, "|") != strings.Join(want, "|") {
		t.Errorf("console records:\n got %v\nwant %v", steps, want)
	}
	if *updateScreens {
		for _, n := range []string{"overview", "patient", "alerts", "breakglass", "approvals", "review"} {
			b, err := os.ReadFile(filepath.Join(art, n+".png"))
			if err == nil {
				err = os.WriteFile(filepath.Join("..", "docs", "console", n+".png"), b, 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("screenshots in %s", art)
}

// setRoleThresholds rewrites a copied library's data so role's limits are
// limits.
func setRoleThresholds(t *testing.T, path, role string, limits map[string]any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	br := d["phigate"].(map[string]any)["bulk_read"].(map[string]any)
	br["thresholds"].(map[string]any)[role] = limits
	if b, err = json.Marshal(d); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
