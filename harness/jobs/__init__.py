"""Running a campaign's jobs, here or on a cluster.

- model.py     the job record (campaign.json), the job as sent to a worker, the typed result it returns
- executor.py  the executor protocol, its hooks, interrupts and progress lines
- local.py     jobs as child processes of this machine
- dask.py      jobs as tasks of a Dask `distributed` cluster (a scheduler's address, or local:N)
- task.py      one job where it runs: build, run within its limits, return its outputs as bytes
- identity.py  which kpool a process runs (version, source hash), and the check that workers match
"""
