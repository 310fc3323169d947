package forwarding

// NewNsIPT is for the external tests (package forwarding_test), which may
// import the Docker watcher (it imports this package).
var NewNsIPT = newNsIPT
