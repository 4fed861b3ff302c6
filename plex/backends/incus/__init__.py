"""Incus over its REST API: one module per kind of object it manages.

`protocol` is what the use cases program against (the `Incus` Protocol, `ExecResult`,
`ImageInfo`); `client` is the real implementation (`PylxdIncus`, `connect`), assembled from one
part per kind of object over `rest` (the session and operation waits).
"""
