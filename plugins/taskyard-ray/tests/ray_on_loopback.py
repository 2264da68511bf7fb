"""``python ray_on_loopback.py start ...``: the ``ray`` CLI, keeping 127.0.0.1 as the node address.

Ray replaces a loopback address by the machine's (for other machines' sake)
and its servers then listen on every interface. For a test cluster that must
stay on 127.0.0.1, the address is kept as given. The node also gets longer
than Ray's fixed 30 s to register (a busy machine needs it). Everything else
is Ray's own CLI, unchanged.
"""

from __future__ import annotations

import sys

from ray._private import services  # no public switch for this


def _keep(host: str) -> str:
    return host


services.resolve_ip_for_localhost = _keep

if __name__ == "__main__":
    from ray.scripts.scripts import main

    from taskyard_ray.connection import patient_node_lookup

    sys.argv[0] = "ray"
    with patient_node_lookup():
        main()
