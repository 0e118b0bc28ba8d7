// Command etcd is etcd's own entry point (etcdmain.Main), built from the
// go.etcd.io/etcd/server/v3 module at the version Kubernetes pins, so the
// control-plane tier runs the etcd the API server was released against.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
