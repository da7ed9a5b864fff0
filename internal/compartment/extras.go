package compartment

// extraType is a resource type R4 keeps out of the Patient compartment
// that nevertheless holds one patient's data. Listing it here makes both
// sides treat it as patient data: a search on it that no parameter pins
// reads as all patients, and a response resource about another patient is
// withheld. Params and Paths come from the type's R4 search parameters or,
// where it has none, its elements.
type extraType struct {
	Type   string
	Params []string
	Paths  []string
}

// extras fail closed on types whose content is a patient's even though the
// compartment definition says otherwise.
var extras = []extraType{
	// Task.for is the patient the task is about (R4 "patient" =
	// Task.for.where(resolve() is Patient), "subject" = Task.for).
	{Type: "Task", Params: []string{"patient", "subject"}, Paths: []string{"for"}},
	// Device.patient: an implanted or assigned device is the patient's.
	{Type: "Device", Params: []string{"patient"}, Paths: []string{"patient"}},
	// GuidanceResponse.subject: decision-support output about a patient.
	{Type: "GuidanceResponse", Params: []string{"subject", "patient"}, Paths: []string{"subject"}},
	// Binary can hold any document; securityContext names the resource
	// (often the patient) whose access rules govern it. It has no patient
	// search parameter, so any search on it reads as all patients.
	{Type: "Binary", Params: []string{}, Paths: []string{"securityContext"}},
	// Bundle can hold anything and has no patient parameter; its entries
	// are checked one by one, so it needs no path of its own.
	{Type: "Bundle", Params: []string{}},
}
