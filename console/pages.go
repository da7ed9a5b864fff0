package console

import (
	"net/http"
	"strings"
	"time"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/store"
)

// bar is one hour of the decisions chart, in SVG units.
type bar struct {
	X, AllowY, AllowH, DenyY, DenyH int
	Label                           string
	Allowed, Denied                 int
}

const (
	chartHours  = 24
	chartHeight = 160
	barWidth    = 22
)

func (c *Console) overview(w http.ResponseWriter, r *http.Request, s session) {
	if !c.viewed(w, r, audit.ConsoleEvent{Officer: s.Subject, Action: "overview"}) {
		return
	}
	now := c.d.Now().UTC().Truncate(time.Hour).Add(time.Hour)
	since := now.Add(-chartHours * time.Hour)
	entries, err := audit.Query(c.d.AuditDir, audit.Filter{Kind: audit.KindDecision, Since: since},
		audit.QueryOptions{EncryptionKey: c.d.EncryptionKey})
	data := page(r, s, "overview")
	if err != nil {
		data["Error"] = "The audit trail could not be read."
	}
	var allowed, denied [chartHours]int
	for i := range entries {
		h := int(entries[i].Recorded.Sub(since) / time.Hour)
		if h < 0 || h >= chartHours {
			continue
		}
		if entries[i].Event.Outcome == audit.OutcomeSuccess {
			allowed[h]++
		} else {
			denied[h]++
		}
	}
	peak := 1
	for h := range chartHours {
		peak = max(peak, allowed[h]+denied[h])
	}
	bars := make([]bar, chartHours)
	totalA, totalD := 0, 0
	for h := range chartHours {
		ah, dh := allowed[h]*chartHeight/peak, denied[h]*chartHeight/peak
		bars[h] = bar{X: 40 + h*barWidth, AllowH: ah, AllowY: 10 + chartHeight - ah, DenyH: dh, DenyY: 10 + chartHeight - ah - dh,
			Label: since.Add(time.Duration(h) * time.Hour).Format("15"), Allowed: allowed[h], Denied: denied[h]}
		totalA += allowed[h]
		totalD += denied[h]
	}
	open, err := c.d.Alerts.ListAlerts(r.Context(), "", "", 0)
	if err != nil {
		data["Error"] = "The alert store could not be read."
	}
	data["Bars"], data["Peak"], data["Allowed"], data["Denied"], data["OpenAlerts"] = bars, peak, totalA, totalD, len(open)
	data["Width"] = 40 + chartHours*barWidth + 10
	c.render(w, "overview.html", data)
}

// access is one row of "who looked at this patient".
type access struct {
	Time, User, Action, What, Outcome, DecisionID string
	BreakGlass, Denied                            bool
}

func (c *Console) patient(w http.ResponseWriter, r *http.Request, s session) {
	q := r.URL.Query()
	id := strings.TrimPrefix(strings.TrimSpace(q.Get("id")), "Patient/")
	data := page(r, s, "patient", map[string]any{"Patient": id,
		"User": q.Get("user"), "Outcome": q.Get("outcome"), "Days": q.Get("days")})
	if id == "" {
		c.render(w, "patient.html", data)
		return
	}
	if !c.viewed(w, r, audit.ConsoleEvent{Officer: s.Subject, Action: "patient_accesses", Patient: id}) {
		return
	}
	f := audit.Filter{Patient: id, User: strings.TrimSpace(q.Get("user"))}
	switch q.Get("outcome") {
	case "allowed":
		f.Outcome = audit.OutcomeSuccess
	case "denied":
		f.Outcome = audit.OutcomeMinor
	}
	days := 30
	switch q.Get("days") {
	case "1":
		days = 1
	case "7":
		days = 7
	case "365":
		days = 365
	}
	f.Since = c.d.Now().Add(-time.Duration(days) * 24 * time.Hour)
	entries, err := audit.Query(c.d.AuditDir, f, audit.QueryOptions{EncryptionKey: c.d.EncryptionKey})
	if err != nil {
		data["Error"] = "The audit trail could not be read."
	}
	rows := make([]access, 0, len(entries))
	for i := len(entries) - 1; i >= 0 && len(rows) < 500; i-- {
		e := &entries[i]
		if e.Kind == audit.KindConsole {
			continue // officers' own reads are not the patient's accesses
		}
		sub, fu := e.Event.User()
		who := sub
		if fu != "" {
			who += " (" + fu + ")"
		}
		rows = append(rows, access{Time: e.Recorded.UTC().Format("2006-01-02 15:04:05"), User: who, Action: e.Event.Action,
			What: e.Event.Describe(), Outcome: e.Event.OutcomeDesc, DecisionID: e.Event.DecisionID(),
			BreakGlass: e.Event.BreakGlass(), Denied: e.Event.Outcome != audit.OutcomeSuccess})
	}
	data["Rows"] = rows
	c.render(w, "patient.html", data)
}

func (c *Console) alerts(w http.ResponseWriter, r *http.Request, s session) {
	if !c.viewed(w, r, audit.ConsoleEvent{Officer: s.Subject, Action: "alerts"}) {
		return
	}
	data := page(r, s, "alerts")
	open, err := c.d.Alerts.ListAlerts(r.Context(), "", "", 200)
	if err != nil {
		data["Error"] = "The alert store could not be read."
	}
	cleared, _ := c.d.Alerts.ListAlerts(r.Context(), "", store.AlertCleared, 20)
	data["Open"], data["Cleared"] = open, cleared
	c.render(w, "alerts.html", data)
}

func (c *Console) resolve(w http.ResponseWriter, r *http.Request, s session) {
	id := r.PathValue("id")
	state := r.PostFormValue("state")
	note := strings.TrimSpace(r.PostFormValue("note"))
	ce := audit.ConsoleEvent{Officer: s.Subject, Action: "alert_" + state, Target: "alert/" + id}
	if state != store.AlertCleared && state != store.AlertEscalated {
		ce.Action, ce.Refused, ce.Reason = "alert_resolve", true, "unknown state"
		_ = c.record(r, ce)
		http.Error(w, "state must be cleared or escalated", http.StatusBadRequest)
		return
	}
	if note == "" {
		ce.Refused, ce.Reason = true, "no note"
		_ = c.record(r, ce)
		http.Redirect(w, r, "/console/alerts?done=note", http.StatusSeeOther)
		return
	}
	err := c.d.Alerts.ResolveAlert(r.Context(), id, state, s.Subject, note, c.d.Now())
	if err != nil {
		ce.Refused, ce.Reason = true, "store refused"
	}
	if rerr := c.record(r, ce); rerr != nil && err == nil {
		// The change is stored; its record is not. Say so rather than
		// pretend it did not happen.
		http.Error(w, "the alert was resolved, but its audit record could not be written", http.StatusServiceUnavailable)
		return
	}
	if err != nil {
		http.Redirect(w, r, "/console/alerts?done=refused", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/console/alerts?done="+state, http.StatusSeeOther)
}
