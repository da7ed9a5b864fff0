package bench

import (
	"encoding/json"
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	regolib "github.com/phigate/phigate/rego"
)

// pairPopulation is a scenario's callers and patients when it sets Pairs:
// every (practitioner, patient) care-team pair of the data --care-teams
// writes for the same pairs and team size, so that a read on the care
// team is one the policy finds there.
type pairPopulation struct {
	pairs []carePair    // every pair, practitioners in order
	teams map[int][]int // practitioner -> patients
}

type carePair struct{ prac, patient int }

// generatedCareTeams is the care_teams object --care-teams writes: the
// shipped pairs, grown to pairs with synthetic patients.
func generatedCareTeams(pairs, teamSize int) (map[string][]string, error) {
	b, err := regolib.FS.ReadFile("data.json")
	if err != nil {
		return nil, err
	}
	var data struct {
		Phigate map[string]any `json:"phigate"`
	}
	if err := json.Unmarshal(b, &data); err != nil {
		return nil, err
	}
	if data.Phigate == nil {
		return nil, errors.New("the shipped data.json has no phigate object")
	}
	if _, err := addCareTeams(data.Phigate, pairs, teamSize); err != nil {
		return nil, err
	}
	return data.Phigate["care_teams"].(map[string][]string), nil
}

func newPairPopulation(pairs, teamSize int) (*pairPopulation, error) {
	teams, err := generatedCareTeams(pairs, teamSize)
	if err != nil {
		return nil, err
	}
	p := &pairPopulation{teams: make(map[int][]int, len(teams))}
	for who, list := range teams {
		k, ok := idNumber(who, "Practitioner/prac-")
		if !ok {
			continue
		}
		for _, pat := range list {
			if n, ok := idNumber(pat, "pat-"); ok {
				p.teams[k] = append(p.teams[k], n)
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(p.teams)) {
		for _, n := range p.teams[k] {
			p.pairs = append(p.pairs, carePair{k, n})
		}
	}
	if len(p.pairs) == 0 {
		return nil, errors.New("the generated care teams hold no practitioner→patient pair")
	}
	return p, nil
}

func idNumber(s, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil && n > 0
}

// caller draws one pair uniformly. A practitioner's first patient on the
// care team is that pair's, later ones (a batch's entries) are drawn from
// the same team; a patient caller is the pair's patient.
func (p *pairPopulation) caller(rng *rand.Rand, patient bool) (sub, fhirUser string, inTeam, outTeam func() int) {
	pr := p.pairs[rng.IntN(len(p.pairs))]
	if patient {
		n := pr.patient
		return PatientID(n), "Patient/" + PatientID(n), func() int { return n },
			func() int { return p.patientNotIn(rng, func(m int) bool { return m == n }) }
	}
	team := p.teams[pr.prac]
	first := true
	inTeam = func() int {
		if first {
			first = false
			return pr.patient
		}
		return team[rng.IntN(len(team))]
	}
	outTeam = func() int { return p.patientNotIn(rng, func(m int) bool { return slices.Contains(team, m) }) }
	return PractitionerID(pr.prac), "Practitioner/" + PractitionerID(pr.prac), inTeam, outTeam
}

// patientNotIn draws a patient of some pair for which in is false, or one
// on no care team at all when a few draws find none.
func (p *pairPopulation) patientNotIn(rng *rand.Rand, in func(int) bool) int {
	for range 8 {
		if n := p.pairs[rng.IntN(len(p.pairs))].patient; !in(n) {
			return n
		}
	}
	return Patients + len(p.pairs) + 1
}
