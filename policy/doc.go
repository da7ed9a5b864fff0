// Package policy loads, compiles and evaluates phigate's Rego policies with
// the OPA engine.
//
// A policy source (the embedded default library, a directory or a bundle
// file) is compiled once into an immutable Snapshot holding a prepared query
// for data.phigate.authz.decision. The Engine serves the current Snapshot
// through an atomic pointer; a reload compiles and tests the new source
// aside and swaps only when it is sound, so a bad push never replaces a good
// policy. On the hot path the request is turned into an ast.Value directly,
// without a JSON round trip, and the decision is decoded from the AST into
// authz.Decision with errors that name the offending field. A key the
// decoder does not read is never ignored: a policy whose rules show one is
// refused at load, and a decision that carries one anyway (a key computed
// or read from data) is refused at evaluation, which denies. The decision's
// redaction directives are compiled there too (package plan), against the
// token key ids of Config.TokenKeys: a directive the response side could
// not apply denies the request rather than failing its response.
package policy
