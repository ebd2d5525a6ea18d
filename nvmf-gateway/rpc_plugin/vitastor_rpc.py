"""rpc.py plugin for vitastor-nvmf's own methods (SPDK's rpc.py knows every other one).

    PYTHONPATH=nvmf-gateway/rpc_plugin spdk-rpc -s /var/tmp/spdk.sock --plugin vitastor_rpc \
        bdev_vitastor_create -b vol0 -i testimg [--etcd-address HOST:PORT] [--read-only]
"""


def spdk_rpc_plugin_initialize(subparsers):
    def bdev_vitastor_create(args):
        params = {"name": args.name}
        for key in ("image", "pool", "inode", "etcd_address", "etcd_prefix", "uuid"):
            value = getattr(args, key)
            if value is not None:
                params[key] = value
        if args.read_only:
            params["read_only"] = True
        print(args.client.call("bdev_vitastor_create", params))

    p = subparsers.add_parser("bdev_vitastor_create", help="Add a bdev backed by a Vitastor image")
    p.add_argument("-b", "--name", required=True, help="bdev name")
    p.add_argument("-i", "--image", help="image name")
    p.add_argument("--pool", type=int, help="pool id (with --inode)")
    p.add_argument("--inode", type=int, help="inode number in the pool (with --pool)")
    p.add_argument("--etcd-address", dest="etcd_address", help="etcd of the cluster (default: the gateway's)")
    p.add_argument("--etcd-prefix", dest="etcd_prefix", help="etcd prefix (default: the gateway's)")
    p.add_argument("-u", "--uuid", help="bdev UUID (namespaces take it as their identity)")
    p.add_argument("-r", "--read-only", dest="read_only", action="store_true", help="refuse writes")
    p.set_defaults(func=bdev_vitastor_create)

    def bdev_vitastor_delete(args):
        print(args.client.call("bdev_vitastor_delete", {"name": args.name}))

    p = subparsers.add_parser("bdev_vitastor_delete", help="Delete a Vitastor bdev")
    p.add_argument("name", help="bdev name")
    p.set_defaults(func=bdev_vitastor_delete)
