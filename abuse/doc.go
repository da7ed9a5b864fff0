// Package abuse holds what phigate decides over time rather than one
// request at a time: token buckets that throttle an identity, a client or
// an address per class of route, and the usage counters (distinct
// patients per user in a sliding window) that the policy's limits are
// watched on. Counters live in this process for one node, or in Redis,
// shared by every replica of a fleet.
//
// Both fail closed: a counter that cannot be read refuses the request
// (503), since a throttled or watched identity must never get PHI because
// its counter was away.
package abuse
