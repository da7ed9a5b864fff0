package authz

import "strings"

// purposeSystem is the code system of HL7 v3 ActReason; a purpose given as
// "system|code" must name it.
const purposeSystem = "http://terminology.hl7.org/CodeSystem/v3-ActReason"

// purposeCodes are the HL7 v3-ActReason codes of the PurposeOfUse value
// set that phigate accepts. Codes are case-sensitive, as in the code system.
var purposeCodes = map[string]bool{
	// Treatment and emergency
	"TREAT": true, "ETREAT": true, "BTG": true, "CAREMGT": true, "POPHLTH": true,
	"PATRQT": true, "FAMRQT": true, "PWATRNY": true, "SUPNWK": true, "DONAT": true,
	// Payment
	"HPAYMT": true, "CLMATTCH": true, "COVAUTH": true, "COVERAGE": true, "ELIGDTRM": true,
	"ELIGVER": true, "ENROLLM": true, "MILDCRG": true, "REMITADV": true,
	// Operations
	"HOPERAT": true, "HACCRED": true, "HCOMPL": true, "HDECD": true, "HDIRECT": true,
	"HDM": true, "HLEGAL": true, "HOUTCOMS": true, "HPRGRP": true, "HQUALIMP": true,
	"HSYSADMIN": true, "LABELING": true, "METAMGT": true, "MEMADMIN": true, "MILCDM": true,
	"PATADMIN": true, "PATSFTY": true, "PERFMSR": true, "RECORDMGT": true, "SYSDEV": true,
	"HTEST": true, "TRAIN": true,
	// Marketing, research, public health, law
	"HMARKT": true, "HRESCH": true, "BIORCH": true, "CLINTRCH": true, "CLINTRCHNPC": true,
	"CLINTRCHPC": true, "DSRCH": true, "POARCH": true, "TRANSRCH": true,
	"PUBHLTH": true, "DISASTER": true, "THREAT": true, "GOV": true, "LAW": true,
	"CLINTRL": true, "DECEASED": true,
}

// CanonicalPurpose returns the bare ActReason code of v ("TREAT" or
// "http://terminology.hl7.org/CodeSystem/v3-ActReason|TREAT"), and false
// when v is not a known code.
func CanonicalPurpose(v string) (string, bool) {
	if sys, code, ok := strings.Cut(v, "|"); ok {
		if sys != purposeSystem {
			return "", false
		}
		v = code
	}
	if !purposeCodes[v] {
		return "", false
	}
	return v, true
}
