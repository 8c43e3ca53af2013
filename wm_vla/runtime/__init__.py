"""Runtime: ranking (GPC-RANK/OPT); backends, export and the executor arrive with issues #4 and #5."""
