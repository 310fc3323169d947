package app

import "strings"

// Ready says whether the daemon has listed both Docker and etcd (until then
// it changes nothing), and otherwise what it still waits for. The health
// file reports it.
func (a *App) Ready() (bool, string) {
	select {
	case <-a.synced:
		return true, ""
	default:
	}
	var missing []string
	for _, s := range []string{"docker", "etcd"} {
		if !a.store.Synced(s) {
			missing = append(missing, s)
		}
	}
	if len(missing) == 0 {
		return false, "starting"
	}
	return false, "waiting for the first listing of " + strings.Join(missing, " and ")
}
