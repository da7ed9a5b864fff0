package authz

// Interaction names what a request does: the FHIR R4 restful-interaction
// code where R4 has one, a finer word where phigate tells apart what R4
// lumps together (a compartment search, the batch and transaction kinds),
// and InteractionNonFHIR for a configured legacy route. The words are a
// contract with policy authors, who match on them in input.fhir.interaction,
// so a constant is only ever added.
type Interaction string

const (
	InteractionRead              Interaction = "read"
	InteractionVRead             Interaction = "vread"
	InteractionUpdate            Interaction = "update"
	InteractionPatch             Interaction = "patch"
	InteractionDelete            Interaction = "delete"
	InteractionCreate            Interaction = "create"
	InteractionSearchType        Interaction = "search-type"
	InteractionSearchSystem      Interaction = "search-system"
	InteractionSearchCompartment Interaction = "search-compartment"
	InteractionHistoryInstance   Interaction = "history-instance"
	InteractionHistoryType       Interaction = "history-type"
	InteractionHistorySystem     Interaction = "history-system"
	InteractionOperation         Interaction = "operation"
	InteractionBatch             Interaction = "batch"
	InteractionTransaction       Interaction = "transaction"
	InteractionCapabilities      Interaction = "capabilities"
	InteractionNonFHIR           Interaction = "non-fhir"
)

// Interactions lists every interaction the parser can produce, so that a
// consumer mapping them (the audit trail's action and subtype codes) can be
// tested against all of them.
func Interactions() []Interaction {
	return []Interaction{InteractionRead, InteractionVRead, InteractionUpdate, InteractionPatch,
		InteractionDelete, InteractionCreate, InteractionSearchType, InteractionSearchSystem,
		InteractionSearchCompartment, InteractionHistoryInstance, InteractionHistoryType,
		InteractionHistorySystem, InteractionOperation, InteractionBatch, InteractionTransaction,
		InteractionCapabilities, InteractionNonFHIR}
}
