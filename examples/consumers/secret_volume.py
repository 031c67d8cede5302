"""Keeps a directory the way kubelet keeps a Secret volume, for running the consumer examples
outside a cluster (the playground does): `kubectl get secret NAME -w` feeds it, and each new
version of the Secret is written into a fresh hidden directory, then the `..data` link is
swapped to it by a rename and the previous version removed, so a reader sees one version or
the next, never a mix.

Run: python secret_volume.py SECRET DIR   (KUBECONFIG and PATH as for kubectl)
"""

import base64
import os
import shutil
import signal
import subprocess
import sys

KEYS = ("token", "expiresOn", "identityId")


def project(directory, version, values):
    name = f"..v{version}"
    fresh = os.path.join(directory, name)
    os.makedirs(fresh)
    for key, value in zip(KEYS, values):
        with open(os.path.join(fresh, key), "wb") as f:
            f.write(base64.b64decode(value))
    data = os.path.join(directory, "..data")
    old = os.readlink(data) if os.path.islink(data) else None
    tmp = os.path.join(directory, "..data_tmp")
    os.symlink(name, tmp)
    os.replace(tmp, data)
    for key in KEYS:
        link = os.path.join(directory, key)
        if not os.path.lexists(link):
            os.symlink(os.path.join("..data", key), link)
    if old:
        shutil.rmtree(os.path.join(directory, old), ignore_errors=True)


def main():
    secret, directory = sys.argv[1], sys.argv[2]
    os.makedirs(directory, exist_ok=True)
    template = "{.data.token} {.data.expiresOn} {.data.identityId}{\"\\n\"}"
    watch = subprocess.Popen(
        ["kubectl", "get", "secret", secret, "-w", "-o", f"jsonpath={template}"],
        stdout=subprocess.PIPE,
        text=True,
    )

    def stop(*_):
        watch.terminate()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    version, last = 0, None
    for line in watch.stdout:
        values = line.split()
        if len(values) != len(KEYS) or values[0] == last:
            continue
        version += 1
        project(directory, version, values)
        last = values[0]
        print(f"projected version {version} of Secret {secret}", flush=True)
    sys.exit(watch.wait())


if __name__ == "__main__":
    main()
