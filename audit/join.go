package audit

// A filtering record written from plan metadata version 1 names neither
// the user nor the patients: the decision side did not send them. Its
// decision record, written before the response was asked for, does. Query
// joins the two by decision id when the decision is in the same trail (it
// is not when another replica decided), so that a question by patient or
// by user finds the filtering records too.

// DetailJoined on a filtering entity says the record's user and patients
// were taken from the decision record named by its value when it was read;
// the stored record does not hold them.
const DetailJoined = "user-and-patients-from-decision"

// maxJoined bounds how many decisions a query keeps to join with the
// filtering records after them. A filtering record follows its decision
// by one upstream round trip, so only the most recent decisions matter.
const maxJoined = 1 << 17

// joinInfo is what a filtering record takes from its decision.
type joinInfo struct {
	user     *Agent
	patients []string
}

// joiner remembers recent decisions and fills the filtering records that
// follow them.
type joiner struct {
	byID  map[string]joinInfo
	order []string // decision ids, oldest first, for eviction
	next  int
}

func newJoiner() *joiner { return &joiner{byID: map[string]joinInfo{}} }

// see notes a decision record, or fills a filtering record that lacks its
// user and patients from the decision before it.
func (j *joiner) see(e *Entry) {
	ev := e.Event
	switch e.Kind {
	case KindDecision:
		id := ev.DecisionID()
		if id == "" {
			return
		}
		var info joinInfo
		for i := range ev.Agent {
			if ev.Agent[i].Requestor {
				a := ev.Agent[i]
				info.user = &a
				break
			}
		}
		info.patients = ev.Patients()
		if info.user == nil && len(info.patients) == 0 {
			return
		}
		j.put(id, info)
	case KindFiltering:
		if hasRequestor(ev) || len(ev.Patients()) > 0 {
			return
		}
		id := ev.DecisionID()
		info, ok := j.byID[id]
		if !ok {
			return
		}
		e.Event = joined(ev, id, info)
	}
}

func (j *joiner) put(id string, info joinInfo) {
	if _, ok := j.byID[id]; !ok {
		if len(j.order) < maxJoined {
			j.order = append(j.order, id)
		} else {
			delete(j.byID, j.order[j.next])
			j.order[j.next] = id
			j.next = (j.next + 1) % maxJoined
		}
	}
	j.byID[id] = info
}

func hasRequestor(ev *AuditEvent) bool {
	for i := range ev.Agent {
		if ev.Agent[i].Requestor {
			return true
		}
	}
	return false
}

// joined returns a copy of a filtering event with the decision's user and
// patients, and the filtering entity marked as joined.
func joined(ev *AuditEvent, decisionID string, info joinInfo) *AuditEvent {
	c := *ev
	c.Agent = make([]Agent, 0, len(ev.Agent)+1)
	if info.user != nil {
		u := *info.user
		u.Network, u.PurposeOfUse = nil, nil // the decision's, not the filtering's
		c.Agent = append(c.Agent, u)
	}
	c.Agent = append(c.Agent, ev.Agent...)
	c.Entity = make([]Entity, 0, len(ev.Entity)+len(info.patients))
	for _, en := range ev.Entity {
		if en.Role != nil && *en.Role == roleJob {
			en.Detail = append(append([]EntityDetail(nil), en.Detail...), EntityDetail{Type: DetailJoined, ValueString: decisionID})
		}
		c.Entity = append(c.Entity, en)
	}
	for _, p := range info.patients {
		c.Entity = append(c.Entity, patientEntity(p))
	}
	return &c
}
