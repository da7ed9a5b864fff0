//go:build !linux

package main

// fsKind is known only on Linux.
func fsKind(string) string { return "unknown" }
