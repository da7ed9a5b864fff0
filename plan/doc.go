// Package plan holds the response plan: what the response side must do to
// the body of an allowed request (the decision's redaction directives and
// response-side enforcement), in a form that has been checked.
//
// A policy writes directives as data. Compile checks each one when the
// decision is decoded (known action, element path parsed, token format and
// de-identification profile known, key id among the deployment's token
// keys), so a directive that could not be applied denies the request
// instead of failing its response after the upstream has answered. The
// response filters receive only compiled rules.
//
// The plan travels from ext_authz to ext_proc in Envoy's dynamic metadata.
// Metadata.Encode writes it with a version; DecodeMetadata refuses any
// other version and compiles the plan again against the filter side's own
// keys, since the two sides may be different processes.
//
// The package knows paths and key ids, never how bodies are parsed or
// tokens made: the decision path imports it without the redaction engine.
package plan
