package registry

// StatusDir holds each running registrar's view from its host:
// <ConfigPrefix>/_status/<host>, on a short lease of its own, so that
// `flannel-registrar status` on any host shows every host's peer
// reachability and recovery actions without asking a daemon.
const StatusDir = "_status"

// Status is the key of host's status entry.
func (k Keys) Status(host string) string { return k.ConfigPrefix + "/" + StatusDir + "/" + host }

// Statuses is the prefix of every status entry.
func (k Keys) Statuses() string { return k.ConfigPrefix + "/" + StatusDir + "/" }
