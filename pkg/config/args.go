package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// rawValue is a flag that only records its text, so flags are validated by the same parsers
// (and reported with the same messages) as environment variables.
type rawValue struct {
	s       string
	set     bool
	boolean bool
}

func (r *rawValue) String() string {
	if r == nil {
		return ""
	}
	return r.s
}

func (r *rawValue) Set(s string) error {
	r.s, r.set = s, true
	return nil
}

// IsBoolFlag lets "--debug" stand for "--debug=true" (flag package protocol).
func (r *rawValue) IsBoolFlag() bool { return r.boolean }

type commandLine struct {
	mode   Mode
	values []*rawValue // parallel to settings
	json   bool        // --json (status)
}

// modeFlags are the original's --once and --diagnose, plus the usual --version.
var modeFlags = []struct {
	flag string
	mode Mode
	help string
}{
	{"once", ModeOnce, "same as the once command"},
	{"diagnose", ModeDiagnose, "same as the diagnose command"},
	{"version", ModeVersion, "same as the version command"},
}

var commands = []Mode{ModeRun, ModeOnce, ModeDiagnose, ModeStatus, ModeDoctor, ModeVersion, ModePrepare, ModeHealth}

// parseCommandLine reads flags and at most one command; flags may come on either side of it.
func parseCommandLine(args []string) (commandLine, error) {
	fs := flag.NewFlagSet("flannel-registrar", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // the caller prints Usage and the error
	cl := commandLine{values: make([]*rawValue, len(settings))}
	for i, s := range settings {
		cl.values[i] = &rawValue{boolean: s.boolean}
		fs.Var(cl.values[i], s.flag, s.help)
	}
	jsonValue := &rawValue{boolean: true}
	fs.Var(jsonValue, "json", "status: print JSON instead of a table")
	modeValues := make([]*rawValue, len(modeFlags))
	for i, m := range modeFlags {
		modeValues[i] = &rawValue{boolean: true}
		fs.Var(modeValues[i], m.flag, m.help)
	}

	if err := parseFlags(fs, args); err != nil {
		return commandLine{}, err
	}
	var modes []Mode
	if rest := fs.Args(); len(rest) > 0 {
		m, err := parseCommand(rest[0])
		if err != nil {
			return commandLine{}, err
		}
		modes = append(modes, m)
		if err := parseFlags(fs, rest[1:]); err != nil {
			return commandLine{}, err
		}
		if extra := fs.Args(); len(extra) > 0 {
			return commandLine{}, fmt.Errorf("unexpected argument %q after command %q: expected flags only (boolean flags take a value only as --flag=value)", extra[0], rest[0])
		}
	}
	for i, m := range modeFlags {
		if !modeValues[i].set {
			continue
		}
		on, err := parseBool(modeValues[i].s)
		if err != nil {
			return commandLine{}, fmt.Errorf("--%s=%q: %w", m.flag, modeValues[i].s, err)
		}
		if on {
			modes = append(modes, m.mode)
		}
	}
	if jsonValue.set {
		on, err := parseBool(jsonValue.s)
		if err != nil {
			return commandLine{}, fmt.Errorf("--json=%q: %w", jsonValue.s, err)
		}
		cl.json = on
	}
	slices.Sort(modes)
	modes = slices.Compact(modes)
	switch len(modes) {
	case 0:
		cl.mode = ModeRun
	case 1:
		cl.mode = modes[0]
	default:
		return commandLine{}, fmt.Errorf("conflicting commands %s: expected one of run, once, diagnose, status, doctor, version, prepare, health", joinModes(modes))
	}
	return cl, nil
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		return ErrHelp
	default:
		return fmt.Errorf("command line: %w (see --help)", err)
	}
}

func parseCommand(arg string) (Mode, error) {
	if arg == "help" {
		return "", ErrHelp
	}
	if m := Mode(arg); slices.Contains(commands, m) {
		return m, nil
	}
	return "", fmt.Errorf("unknown command %q: expected run, once, diagnose, status, doctor, version, prepare or health (boolean flags take a value only as --flag=value)", arg)
}

func joinModes(modes []Mode) string {
	s := make([]string, len(modes))
	for i, m := range modes {
		s[i] = string(m)
	}
	return strings.Join(s, " and ")
}
