// Package filters redacts and checks response bodies on their way to the
// client: FHIR R4 JSON (single resources and Bundles) and HL7 v2 messages.
// It receives the directives a decision carried and applies them; it never
// decides who may see what.
package filters
