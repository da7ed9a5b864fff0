// Package deploy holds phigate's Kubernetes and Istio manifests (a Kustomize
// base in kustomize/base, an Istio overlay in kustomize/overlays/istio) and
// the tests that hold them to the real API types and to each other. It has
// no code of its own: the Kubernetes and Istio API modules are imported by
// its tests alone, so phigate's binary does not link them.
package deploy
