package registry

import clientv3 "go.etcd.io/etcd/client/v3"

// SetLessor replaces the lessor factory Run uses, to inject keep-alive faults.
func SetLessor(r *Registry, f func(*clientv3.Client) clientv3.Lease) { r.newLessor = f }
