"""nslab's sandbox engine: namespaces, cgroups, rootfs, network and processes.

Everything that needs root lives here and runs inside `sandboxd`; the web app only
holds a `sandbox.client.Client`.
"""
