# A policy in the style of the OPA-Envoy plugin's documented examples
# (OPA documentation, "Envoy › Policy Primer via Examples"): method and
# path rules over input.attributes.request.http, parsed_path, parsed_query
# and parsed_body, a JWT decoded from the Authorization header with
# io.jwt.decode, a boolean decision (allow) and the object result (result)
# with headers and an HTTP status. phigate serves it unchanged.
package envoy.authz

import future.keywords

import input.attributes.request.http

default allow := false

allow if {
	is_token_valid
	action_allowed
}

is_token_valid if {
	now := time.now_ns() / 1000000000
	now < token.payload.exp
}

# Physicians read patients.
action_allowed if {
	http.method == "GET"
	"physician" in token.payload.roles
	glob.match("/fhir/Patient/*", ["/"], http.path)
}

# Billing reads patients too; the response plan removes what it may not see.
action_allowed if {
	http.method == "GET"
	"billing" in token.payload.roles
	count(input.parsed_path) == 3
	input.parsed_path[0] == "fhir"
	input.parsed_path[1] == "Patient"
}

# Nurses search one patient's observations.
action_allowed if {
	http.method == "GET"
	"nurse" in token.payload.roles
	input.parsed_path == ["fhir", "Observation"]
	count(input.parsed_query.patient) == 1
}

# A physician may post a JSON document naming themselves as the author.
action_allowed if {
	http.method == "POST"
	"physician" in token.payload.roles
	input.parsed_path == ["fhir", "Basic"]
	input.parsed_body.author == token.payload.sub
}

token := {"payload": payload} if {
	[_, encoded] := split(http.headers.authorization, " ")
	[_, payload, _] := io.jwt.decode(encoded)
}

headers["x-ext-auth-allow"] := "yes"

headers["x-validated-by"] := "security-checkpoint"

request_headers_to_remove := ["one-auth-header"]

response_headers_to_add["x-foo"] := "bar"

status_code := 200 if {
	allow
} else := 401 if {
	not is_token_valid
} else := 403

body := "Authentication Failed" if status_code == 401

body := "Unauthorized Request" if status_code == 403

result["allowed"] := allow

result["headers"] := headers

result["response_headers_to_add"] := response_headers_to_add

result["request_headers_to_remove"] := request_headers_to_remove

result["body"] := body

result["http_status"] := status_code
