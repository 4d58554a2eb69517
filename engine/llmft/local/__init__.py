"""The local runner: the charts' rendered workloads run on one machine, no cluster.

`llmft local CHART -f VALUES --set ...` renders with the real Helm engine, then runs
each pod's containers (init containers first) as local processes with volumes as
folders, container paths mapped to them, and Secrets from a secrets file or the
environment. Bucket storage is the embedded SeaweedFS server unless
`BUCKET_STORAGE_HOST` is set.
"""
