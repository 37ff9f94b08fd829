"""Reliability (issue #7): crash safety under SIGKILL, concurrent runs, bad input, corrupt checkpoints,
numerical faults and safe loading, each checked the way a user meets it: through `kd-bench`."""
