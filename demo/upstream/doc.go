// Package upstream is the demo's legacy FHIR service: the unchangeable
// system phigate stands in front of. It knows nothing of phigate. It serves
// a fhirdata.Dataset the way a real FHIR R4 server does wherever that
// matters to an authorization layer, so that the gateway is tested against
// realistic traffic rather than a convenient stub:
//
//   - read, vread (/_history/{v}), ETag and Last-Modified, 404 for unknown
//     and 410 for deleted resources, OperationOutcome error bodies;
//   - search-type (GET, and POST /{type}/_search) with _id, patient,
//     subject, name, code, identifier, _security and more (see the
//     CapabilityStatement at /metadata), token/string/reference/date
//     semantics, comma-OR and repeat-AND, _count/_offset paging, searchset
//     Bundles with total, fullUrl and self/next links;
//   - unknown search parameters are ignored by default, as FHIR specifies,
//     and reported in an outcome entry: the result is broader than the
//     client may have meant, which is exactly what a gateway must not
//     assume away ("Prefer: handling=strict" or Config.Strict makes it 400);
//   - compartment search /Patient/{id}/{type}, _include and _revinclude
//     (which pull in resources of other patients' practitioners and so on),
//     Patient/{id}/$everything (with _type);
//   - instance, type and system _history with paging and _since;
//   - batch and transaction Bundles POSTed to the base (transactions are
//     atomic and resolve urn:uuid references), create, update (including
//     update-as-create and If-Match), delete, on an in-memory copy;
//   - JSON by default, FHIR XML with _format=xml or an Accept naming xml;
//     gzip when Accept-Encoding allows it; Vary on both;
//   - a non-FHIR legacy JSON route, GET /legacy/patients/{id}/summary, and
//     an HL7 v2 route, GET /hl7/patients/{id}/adt (ADT^A08, ER7).
//
// Every request that reaches the server is kept in a bounded request log
// (Requests, Reset, and AdminHandler for a separate listener), which is how
// a test proves what the gateway let through. Nothing is logged per request
// above debug level, and log lines never carry paths or ids.
package upstream
