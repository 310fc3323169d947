// Package names holds the rules for the names that become etcd key segments:
// host names (HOST_NAME, and every host name read from etcd) and Docker
// network names.
package names

import (
	"errors"
	"strings"
)

// HostExpected describes a valid host name.
const HostExpected = "expected a hostname: dot-separated labels of letters, digits and '-' (1-63 characters, not starting or ending with '-'), at most 253 characters, e.g. node-1"

// CheckHost applies RFC 1123 (ASCII letters, digits and '-'). The name becomes
// an etcd key segment, so this also rules out '/', and '_' keeps it apart
// from the reserved "_hosts", "_registrars" and "_quarantine" segments.
func CheckHost(s string) error {
	if s == "" || len(s) > 253 {
		return errors.New(HostExpected)
	}
	for label := range strings.SplitSeq(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New(HostExpected)
		}
		for i := range len(label) {
			if !isAlnum(label[i]) && label[i] != '-' {
				return errors.New(HostExpected)
			}
		}
	}
	return nil
}

// NetworkExpected describes a valid Docker network name.
const NetworkExpected = "expected a Docker network name: a letter or digit, then letters, digits, '_', '.' or '-' ([a-zA-Z0-9][a-zA-Z0-9_.-]*)"

// CheckNetwork applies Docker's rule for network names,
// [a-zA-Z0-9][a-zA-Z0-9_.-]*.
func CheckNetwork(s string) error {
	if s == "" || !isAlnum(s[0]) {
		return errors.New(NetworkExpected)
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '_' && c != '.' && c != '-' {
			return errors.New(NetworkExpected)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9')
}
