// Package deploy holds the host deployment files (systemd units in
// deploy/systemd) and the tests of every deployment file of the repo: the
// units (systemd-analyze verify, hardening), and the root docker-compose.yml
// as Debian's docker-compose 1.29 reads it. No Go code ships from here.
package deploy
