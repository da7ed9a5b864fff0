package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/phigate/phigate/store"
)

// storeDSN reads the PostgreSQL connection string from a file or an
// environment variable (PHIGATE_STORE_DSN unless named), never from a
// flag: it usually holds a password, and a flag's value shows in the
// process list and the shell history.
func storeDSN(file, env string) (string, error) {
	if file == "" && env == "" {
		env = "PHIGATE_STORE_DSN"
	}
	dsn, err := store.ReadDSN(file, env, "--dsn-file", "--dsn-env")
	if err == nil && dsn == "" {
		err = errors.New("no connection string (give --dsn-file or --dsn-env)")
	}
	return dsn, err
}

func storeFlags(name string, stderr io.Writer) (*flag.FlagSet, *string, *string) {
	fs := flag.NewFlagSet("phigate store "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("dsn-file", "", "file holding the PostgreSQL connection string")
	env := fs.String("dsn-env", "", "environment variable holding it (default PHIGATE_STORE_DSN)")
	return fs, file, env
}

// cmdStoreMigrate brings the shared store's schema to this build's
// version. It is safe to run from several replicas at once.
func cmdStoreMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, file, env := storeFlags("migrate", stderr)
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: phigate store migrate [--dsn-file F | --dsn-env NAME]")
		return 2
	}
	dsn, err := storeDSN(*file, *env)
	if err != nil {
		fmt.Fprintln(stderr, "phigate store migrate:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	applied, err := store.Migrate(ctx, dsn)
	for _, v := range applied {
		fmt.Fprintf(stdout, "applied schema version %d\n", v)
	}
	if err != nil {
		fmt.Fprintln(stderr, "phigate store migrate:", err)
		return 1
	}
	fmt.Fprintf(stdout, "ok: schema version %d\n", store.SchemaVersion())
	return 0
}

// cmdStoreCheck says whether the shared store is at this build's schema.
func cmdStoreCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, file, env := storeFlags("check", stderr)
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: phigate store check [--dsn-file F | --dsn-env NAME]")
		return 2
	}
	dsn, err := storeDSN(*file, *env)
	if err != nil {
		fmt.Fprintln(stderr, "phigate store check:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := store.Check(ctx, dsn); err != nil {
		fmt.Fprintln(stderr, "phigate store check:", err)
		return 1
	}
	fmt.Fprintf(stdout, "ok: schema version %d\n", store.SchemaVersion())
	return 0
}
