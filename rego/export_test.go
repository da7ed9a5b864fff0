package regolib

// The tests of package regolib_test import the policy package, which
// imports this one, so they cannot live here; these names lend them the
// harness of this package's tests.

var (
	EquivalenceInputs = equivalenceInputs
	Prepare           = prepare
	PrepareWithData   = prepareWithData
	VariantData       = variantData
	EvalJSON          = evalJSON
)

// VariantEvery is how many of the inputs (every n-th) TestEquivalence also
// decides against VariantData.
const VariantEvery = variantEvery

// MirrorDecision is the mirror of the decision document these tests decode
// into.
type MirrorDecision = decision
