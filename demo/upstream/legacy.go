package upstream

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/phigate/phigate/demo/fhirdata"
)

// The non-FHIR routes show what phigate must protect that is not FHIR: a
// plain JSON API that predates the FHIR facade, and an HL7 v2 feed.

// legacySummary is the legacy route's body: plain JSON, no resourceType.
type legacySummary struct {
	PatientID string `json:"patientId"`
	Name      string `json:"name"`
	MRN       string `json:"mrn"`
	Phone     string `json:"phone"`
	BirthDate string `json:"birthDate"`
	Email     string `json:"email,omitempty"`
	PCP       string `json:"primaryCareProvider,omitempty"`
}

// patientFromPath extracts {id} from /<prefix>/patients/{id}/<suffix> and
// returns the current Patient, or nil.
func (s *Server) patientFromPath(path, prefix, suffix string) (string, Resource, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"/patients/")
	if !ok {
		return "", nil, false
	}
	id, ok := strings.CutSuffix(rest, "/"+suffix)
	if !ok || id == "" || strings.Contains(id, "/") {
		return "", nil, false
	}
	s.data.mu.RLock()
	defer s.data.mu.RUnlock()
	if e := s.data.get("Patient", id); e != nil {
		return id, e.current().res, true
	}
	return id, nil, true
}

func (s *Server) serveLegacy(w http.ResponseWriter, r *http.Request) {
	id, p, ok := s.patientFromPath(r.URL.Path, "/legacy", "summary")
	writeJSON := func(status int, v any) {
		b, _ := json.Marshal(v)
		s.sendBytes(w, r, status, "application/json", b)
	}
	switch {
	case !ok:
		writeJSON(http.StatusNotFound, map[string]string{"error": "no such route"})
	case r.Method != http.MethodGet:
		w.Header().Set("Allow", "GET")
		writeJSON(http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
	case p == nil:
		writeJSON(http.StatusNotFound, map[string]string{"error": "patient not found"})
	default:
		given, family := names(p)
		writeJSON(http.StatusOK, legacySummary{
			PatientID: id,
			Name:      strings.TrimSpace(strings.Join(append(given, family), " ")),
			MRN:       identifierValue(p, fhirdata.SystemMRN),
			Phone:     telecom(p, "phone"),
			BirthDate: str(p["birthDate"]),
			Email:     telecom(p, "email"),
			PCP:       pcp(p),
		})
	}
}

func names(p Resource) (given []string, family string) {
	for _, n := range values(p, "name") {
		m, _ := n.(map[string]any)
		family = str(m["family"])
		for _, g := range values(m, "given") {
			given = append(given, str(g))
		}
		return given, family
	}
	return nil, ""
}

func identifierValue(p Resource, system string) string {
	for _, v := range values(p, "identifier") {
		if m, _ := v.(map[string]any); str(m["system"]) == system {
			return str(m["value"])
		}
	}
	return ""
}

func telecom(p Resource, system string) string {
	for _, v := range values(p, "telecom") {
		if m, _ := v.(map[string]any); str(m["system"]) == system {
			return str(m["value"])
		}
	}
	return ""
}

func pcp(p Resource) string {
	for _, v := range values(p, "generalPractitioner") {
		if m, _ := v.(map[string]any); m != nil {
			return str(m["reference"])
		}
	}
	return ""
}

// hl7Seq numbers messages so control ids are unique without carrying
// patient data.
var hl7Seq atomic.Uint64

// hl7Escape applies the ER7 escapes for the default delimiters.
func hl7Escape(s string) string {
	return strings.NewReplacer(`\`, `\E\`, "|", `\F\`, "^", `\S\`, "&", `\T\`, "~", `\R\`, "\r", `\X0D\`, "\n", `\X0A\`).Replace(s)
}

// serveHL7 answers GET /hl7/patients/{id}/adt with an ADT^A08 (update
// patient information) message in ER7 encoding.
func (s *Server) serveHL7(w http.ResponseWriter, r *http.Request) {
	id, p, ok := s.patientFromPath(r.URL.Path, "/hl7", "adt")
	text := func(status int, msg string) {
		s.sendBytes(w, r, status, "text/plain; charset=utf-8", []byte(msg+"\n"))
	}
	switch {
	case !ok:
		text(http.StatusNotFound, "no such route")
		return
	case r.Method != http.MethodGet:
		w.Header().Set("Allow", "GET")
		text(http.StatusMethodNotAllowed, "method not allowed")
		return
	case p == nil:
		text(http.StatusNotFound, "patient not found")
		return
	}
	s.sendBytes(w, r, http.StatusOK, ContentTypeHL7, []byte(s.adtA08(id, p)))
}

func (s *Server) adtA08(id string, p Resource) string {
	now := s.now().Format("20060102150405")
	given, family := names(p)
	first, middle := "", ""
	if len(given) > 0 {
		first = given[0]
	}
	if len(given) > 1 {
		middle = given[1]
	}
	sex := map[string]string{"female": "F", "male": "M", "other": "O"}[str(p["gender"])]
	if sex == "" {
		sex = "U"
	}
	var addr string
	for _, a := range values(p, "address") {
		m, _ := a.(map[string]any)
		var line string
		if l := values(m, "line"); len(l) > 0 {
			line = str(l[0])
		}
		addr = strings.Join([]string{hl7Escape(line), "", hl7Escape(str(m["city"])), hl7Escape(str(m["state"])),
			hl7Escape(str(m["postalCode"])), hl7Escape(str(m["country"])), "H"}, "^")
		break
	}
	var phones []string
	for _, t := range values(p, "telecom") {
		m, _ := t.(map[string]any)
		switch str(m["system"]) {
		case "phone":
			use := "PRN"
			if str(m["use"]) == "mobile" {
				use = "ORN"
			}
			phones = append(phones, hl7Escape(str(m["value"]))+"^"+use+"^PH")
		case "email":
			phones = append(phones, "^NET^Internet^"+hl7Escape(str(m["value"])))
		}
	}
	mrn := identifierValue(p, fhirdata.SystemMRN)
	ssn := identifierValue(p, fhirdata.SystemSSN)
	// PID-3 carries the record's FHIR logical id too (type PI, patient
	// internal identifier), as systems that expose both interfaces do, so a
	// gateway can match the message to the patient its FHIR grant names.
	ids := []string{hl7Escape(mrn) + "^^^HOSP&" + fhirdata.SystemMRN + "&URI^MR", hl7Escape(id) + "^^^DEMOFHIR^PI"}
	if ssn != "" {
		ids = append(ids, hl7Escape(ssn)+"^^^USSSA&2.16.840.1.113883.4.1&ISO^SS")
	}
	dob := strings.ReplaceAll(str(p["birthDate"]), "-", "")
	pcpRef := pcp(p)
	attending := ""
	if k, ok := fhirdata.PractitionerNumber(pcpRef); ok {
		attending = fhirdata.PractitionerID(k)
	}

	segs := []string{
		fmt.Sprintf(`MSH|^~\&|LEGACYFHIR|DEMOHOSP|PHIGATE|DEMO|%s||ADT^A08^ADT_A01|MSG%s%06d|P|2.5.1`, now, now, hl7Seq.Add(1)),
		"EVN|A08|" + now,
		strings.Join([]string{"PID", "1", "", strings.Join(ids, "~"), "",
			hl7Escape(family) + "^" + hl7Escape(first) + "^" + hl7Escape(middle), "",
			dob, sex, "", "", addr, "", strings.Join(phones, "~"), "", "", "", "", hl7Escape(id), hl7Escape(ssn)}, "|"),
		"PV1|1|O|||||" + hl7Escape(attending),
	}
	return strings.Join(segs, "\r") + "\r"
}
