// Package cli is the command-line shape the phigate binaries share: verbs
// of one or two words, flags that report errors instead of exiting, and
// the exit codes 0 (done or help), 1 (failed) and 2 (misused).
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Command is one verb. Run returns the process exit code.
type Command struct {
	Summary string
	Run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// Dispatch runs the command whose name (one or two words) is the longest
// prefix of args, or prints the usage of prog: exit 0 when help was asked
// for, 2 otherwise.
func Dispatch(ctx context.Context, prog string, cmds map[string]Command, args []string, stdout, stderr io.Writer) int {
	for n := 2; n >= 1; n-- {
		if len(args) < n {
			continue
		}
		if c, ok := cmds[strings.Join(args[:n], " ")]; ok {
			return c.Run(ctx, args[n:], stdout, stderr)
		}
	}
	usage(stderr, prog, cmds)
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		return 0
	}
	return 2
}

func usage(w io.Writer, prog string, cmds map[string]Command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "usage: %s <command> [flags]\n\n", prog)
	for _, n := range names {
		fmt.Fprintf(w, "  %-18s %s\n", n, cmds[n].Summary)
	}
}

// Flags returns a FlagSet named name that reports errors to stderr
// instead of exiting, so a command's caller (and its tests) keep control.
func Flags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// Parse parses flags, mapping -h to exit 0 and bad flags to exit 2; ok is
// false when the command should return code at once.
func Parse(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	return 0, true
}

// List is a flag that may be repeated or hold several values separated by
// commas or spaces.
type List []string

func (l *List) String() string { return strings.Join(*l, ",") }

// Set adds the values in v.
func (l *List) Set(v string) error {
	for _, s := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
		*l = append(*l, s)
	}
	return nil
}
